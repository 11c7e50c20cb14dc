//! The device callback bodies must not allocate (style P5): each runs here under a counting
//! global allocator (allocation-counter, thread-local counts) on a warm stream, through every
//! path: normal copy, ring full / ring empty (overrun / underrun), gain ramps, every sample type.

// Helpers outside #[test] fns count as non-test code for clippy; a failed setup must fail the test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use avsd::audio::Counters;
use avsd::audio::capture::InputCallback;
use avsd::audio::mixer::OutputCallback;

#[test]
fn the_counter_sees_an_allocation() {
    let control = allocation_counter::measure(|| {
        std::hint::black_box(vec![0u8; 16]);
    });
    assert!(
        control.count_total > 0,
        "the counting allocator is not installed"
    );
}

#[test]
fn input_callback_does_not_allocate() {
    let (producer, mut consumer) = rtrb::RingBuffer::<f32>::new(4_800);
    let counters = Counters::new();
    let mut cb = InputCallback::new(producer, 2, counters.clone());
    let i16_block = vec![1000i16; 960];
    let f32_block = vec![0.25f32; 960];
    let i32_block = vec![1 << 20; 960];
    cb.process(&i16_block);
    let info = allocation_counter::measure(|| {
        for round in 0..50 {
            cb.process(&i16_block);
            cb.process(&f32_block);
            cb.process(&i32_block);
            if round % 10 == 0 {
                // let the ring drain now and then: both the copy and the overrun path run
                while consumer.pop().is_ok() {}
            }
        }
    });
    assert_eq!(info.count_total, 0, "input callback allocated: {info:?}");
    assert!(
        counters.snapshot_overrun_samples() > 0,
        "the overrun path was not exercised"
    );
}

#[test]
fn output_callback_does_not_allocate() {
    let (mut producer, consumer) = rtrb::RingBuffer::<f32>::new(4_800);
    let master = Arc::new(AtomicU32::new(1.0f32.to_bits()));
    let counters = Counters::new();
    let mut cb = OutputCallback::new(consumer, 2, 48_000, master.clone(), counters.clone());
    let mut out_i16 = vec![0i16; 960];
    let mut out_f32 = vec![0f32; 960];
    let mut out_u16 = vec![0u16; 960];
    cb.process(&mut out_i16);
    let info = allocation_counter::measure(|| {
        for round in 0..50 {
            // the mixer's side is not measured: only the callback runs between pushes
            allocation_counter::opt_out(|| {
                for _ in 0..1_500 {
                    let _ = producer.push(0.5);
                }
            });
            master.store(
                if round % 2 == 0 { 0.1f32 } else { 1.0f32 }.to_bits(),
                Ordering::Relaxed,
            );
            cb.process(&mut out_i16);
            cb.process(&mut out_f32);
            cb.process(&mut out_u16);
        }
    });
    assert_eq!(info.count_total, 0, "output callback allocated: {info:?}");
    assert!(
        counters.snapshot_underruns() > 0,
        "the underrun path was not exercised"
    );
}
