//! Streaming sample-rate conversion over rubato's synchronous FFT resampler: any number of
//! interleaved frames in, everything that is ready out, with the resampler's start-up delay
//! trimmed and its tail flushed at the end so the output has exactly `ceil(in × ratio)` frames.
//! Used by the capture thread (device rate → 16 kHz) and the decode threads (source rate →
//! device rate). Never used inside a device callback.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Why a resampler could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("cannot build a resampler from {from} Hz to {to} Hz: {source}")]
    Construction {
        from: u32,
        to: u32,
        #[source]
        source: rubato::ResamplerConstructionError,
    },
    #[error("resampling failed: {0}")]
    Process(#[from] rubato::ResampleError),
    #[error("resampler buffer size mismatch: {0}")]
    Size(String),
}

/// Converts an interleaved f32 stream of `channels` channels from one rate to another.
pub struct StreamResampler {
    inner: Option<Fft<f32>>,
    channels: usize,
    from: u32,
    to: u32,
    pending: Vec<f32>,
    out_chunk: Vec<f32>,
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
}

impl StreamResampler {
    /// `chunk_frames` is the resampler's input block: smaller means less latency, more calls.
    pub fn new(
        from: u32,
        to: u32,
        channels: usize,
        chunk_frames: usize,
    ) -> Result<Self, ResampleError> {
        let channels = channels.max(1);
        let inner = if from == to {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    from as usize,
                    to as usize,
                    chunk_frames.max(16),
                    channels,
                    FixedSync::Input,
                )
                .map_err(|source| ResampleError::Construction {
                    from,
                    to,
                    source,
                })?,
            )
        };
        let (delay_left, out_len) = match &inner {
            Some(r) => (r.output_delay(), r.output_frames_max() * channels),
            None => (0, 0),
        };
        Ok(Self {
            inner,
            channels,
            from,
            to,
            pending: Vec::new(),
            out_chunk: vec![0.0; out_len],
            delay_left,
            frames_in: 0,
            frames_out: 0,
        })
    }

    pub fn input_rate(&self) -> u32 {
        self.from
    }

    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Feeds interleaved frames; appends every output frame that is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let ch = self.channels;
        let whole = input.len() - input.len() % ch;
        self.frames_in += (whole / ch) as u64;
        if self.inner.is_none() {
            out.extend_from_slice(&input[..whole]);
            self.frames_out += (whole / ch) as u64;
            return Ok(());
        }
        self.pending.extend_from_slice(&input[..whole]);
        self.drain_full_chunks(out)
    }

    fn drain_full_chunks(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let ch = self.channels;
        let Some(r) = self.inner.as_mut() else {
            return Ok(());
        };
        let mut consumed = 0usize;
        loop {
            let need = r.input_frames_next();
            let have = (self.pending.len() - consumed) / ch;
            if have < need {
                break;
            }
            let inp =
                InterleavedSlice::new(&self.pending[consumed..consumed + need * ch], ch, need)
                    .map_err(|e| ResampleError::Size(e.to_string()))?;
            let out_frames = self.out_chunk.len() / ch;
            let mut outp = InterleavedSlice::new_mut(&mut self.out_chunk, ch, out_frames)
                .map_err(|e| ResampleError::Size(e.to_string()))?;
            let (n_in, n_out) = r.process_into_buffer(&inp, &mut outp, None)?;
            consumed += n_in * ch;
            Self::emit(
                &self.out_chunk[..n_out * ch],
                ch,
                &mut self.delay_left,
                &mut self.frames_out,
                out,
            );
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    fn emit(
        chunk: &[f32],
        ch: usize,
        delay_left: &mut usize,
        frames_out: &mut u64,
        out: &mut Vec<f32>,
    ) {
        let frames = chunk.len() / ch;
        let skip = (*delay_left).min(frames);
        *delay_left -= skip;
        out.extend_from_slice(&chunk[skip * ch..]);
        *frames_out += (frames - skip) as u64;
    }

    /// Ends the stream: pushes the remaining input and the resampler's tail, so the total output
    /// is `ceil(frames_in × to / from)` frames.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let ch = self.channels;
        let expected = (self.frames_in * u64::from(self.to)).div_ceil(u64::from(self.from));
        let Some(r) = self.inner.as_mut() else {
            return Ok(());
        };
        let mut guard = 0;
        while self.frames_out < expected && guard < 64 {
            guard += 1;
            let need = r.input_frames_next();
            let have = (self.pending.len() / ch).min(need);
            let mut block = vec![0.0f32; need * ch];
            block[..have * ch].copy_from_slice(&self.pending[..have * ch]);
            self.pending.drain(..have * ch);
            let inp = InterleavedSlice::new(&block, ch, need)
                .map_err(|e| ResampleError::Size(e.to_string()))?;
            let out_frames = self.out_chunk.len() / ch;
            let mut outp = InterleavedSlice::new_mut(&mut self.out_chunk, ch, out_frames)
                .map_err(|e| ResampleError::Size(e.to_string()))?;
            let idx = Indexing {
                partial_len: Some(have),
                ..Indexing::default()
            };
            let (_, n_out) = r.process_into_buffer(&inp, &mut outp, Some(&idx))?;
            let remaining = (expected - self.frames_out) as usize;
            let keep_frames = n_out.min(remaining + self.delay_left);
            Self::emit(
                &self.out_chunk[..keep_frames * ch],
                ch,
                &mut self.delay_left,
                &mut self.frames_out,
                out,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f32, frames: usize) -> Vec<f32> {
        (0..frames)
            .map(|i| (i as f32 * hz * 2.0 * std::f32::consts::PI / rate as f32).sin() * 0.5)
            .collect()
    }

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count()
    }

    #[test]
    fn streaming_resample_keeps_length_and_pitch() {
        let input = tone(48_000, 1000.0, 48_000);
        let mut r = StreamResampler::new(48_000, 16_000, 1, 480).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(333) {
            r.push(chunk, &mut out).unwrap();
        }
        r.flush(&mut out).unwrap();
        assert_eq!(out.len(), 16_000);
        let zc = zero_crossings(&out);
        assert!((995..=1001).contains(&zc), "zero crossings {zc}");
    }

    #[test]
    fn upsampling_stereo_keeps_channels_apart() {
        let left = tone(24_000, 440.0, 24_000);
        let right = tone(24_000, 880.0, 24_000);
        let inter: Vec<f32> = left
            .iter()
            .zip(&right)
            .flat_map(|(l, r)| [*l, *r])
            .collect();
        let mut r = StreamResampler::new(24_000, 48_000, 2, 1024).unwrap();
        let mut out = Vec::new();
        for chunk in inter.chunks(1000) {
            r.push(chunk, &mut out).unwrap();
        }
        r.flush(&mut out).unwrap();
        assert_eq!(out.len(), 2 * 48_000);
        let l: Vec<f32> = out.iter().step_by(2).copied().collect();
        let rr: Vec<f32> = out.iter().skip(1).step_by(2).copied().collect();
        assert!((438..=441).contains(&zero_crossings(&l)));
        assert!((877..=881).contains(&zero_crossings(&rr)));
    }

    #[test]
    fn same_rate_passes_through() {
        let mut r = StreamResampler::new(16_000, 16_000, 1, 160).unwrap();
        let mut out = Vec::new();
        r.push(&[0.1, 0.2, 0.3], &mut out).unwrap();
        r.flush(&mut out).unwrap();
        assert_eq!(out, vec![0.1, 0.2, 0.3]);
    }
}
