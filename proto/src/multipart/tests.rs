use std::convert::Infallible;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::*;

fn channel_stream() -> (
    mpsc::Sender<Bytes>,
    impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
        );
    (tx, stream)
}

async fn next_within(reader: &mut PartReader) -> PartEvent {
    tokio::time::timeout(Duration::from_secs(2), reader.next())
        .await
        .expect("part was not delivered before the next delimiter")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn related_parts_are_delivered_before_the_next_part_arrives() {
    let mut w = RelatedWriter::new();
    let (tx, stream) = channel_stream();
    let mut r = PartReader::new(
        &w.content_type(),
        MultipartKind::Related,
        stream,
        Limits::default(),
    )
    .unwrap();

    tx.send(w.json_part(r#"{"directive":{"n":1}}"#))
        .await
        .unwrap();
    match next_within(&mut r).await {
        PartEvent::Json {
            body, content_id, ..
        } => {
            assert_eq!(&body[..], br#"{"directive":{"n":1}}"#);
            assert_eq!(content_id, None);
        }
        other => panic!("{other:?}"),
    }

    tx.send(w.binary_part_start("TTS-1")).await.unwrap();
    tx.send(Bytes::from_static(b"abc")).await.unwrap();
    assert_eq!(
        next_within(&mut r).await,
        PartEvent::BinaryStart {
            name: None,
            content_id: Some("TTS-1".into()),
            content_type: Some("application/octet-stream".into())
        }
    );
    assert_eq!(
        next_within(&mut r).await,
        PartEvent::BinaryChunk(Bytes::from_static(b"abc"))
    );
    tx.send(Bytes::from_static(b"def")).await.unwrap();
    tx.send(w.binary_part_end()).await.unwrap();
    let mut data = Vec::new();
    loop {
        match next_within(&mut r).await {
            PartEvent::BinaryChunk(c) => data.extend_from_slice(&c),
            PartEvent::BinaryEnd => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(data, b"def");
    tx.send(w.finish()).await.unwrap();
    drop(tx);
    assert_eq!(r.next().await.unwrap(), None);
}

#[tokio::test]
async fn json_split_across_chunks_parses_once_complete() {
    let mut w = RelatedWriter::new();
    let part = w.json_part(r#"{"directive":{"header":{"a":"b"}}}"#);
    let (tx, stream) = channel_stream();
    let mut r = PartReader::new(
        &w.content_type(),
        MultipartKind::Related,
        stream,
        Limits::default(),
    )
    .unwrap();
    for b in part.chunks(7) {
        tx.send(Bytes::copy_from_slice(b)).await.unwrap();
    }
    match next_within(&mut r).await {
        PartEvent::Json { body, .. } => {
            assert_eq!(&body[..], br#"{"directive":{"header":{"a":"b"}}}"#)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn form_data_round_trip() {
    let w = FormDataWriter::new();
    let mut body = BytesMut::new();
    body.extend_from_slice(&w.metadata(r#"{"event":{}}"#));
    body.extend_from_slice(&w.audio_header());
    body.extend_from_slice(&[1u8; 640]);
    body.extend_from_slice(&w.finish());
    let stream = futures_util::stream::iter(
        body.freeze()
            .chunks(100)
            .map(|c| Ok::<_, Infallible>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let mut r = PartReader::new(
        &w.content_type(),
        MultipartKind::FormData,
        stream,
        Limits::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    while let Some(e) = r.next().await.unwrap() {
        events.push(e);
    }
    assert!(matches!(&events[0], PartEvent::Json { name: Some(n), .. } if n == "metadata"));
    assert!(matches!(&events[1], PartEvent::BinaryStart { name: Some(n), .. } if n == "audio"));
    let audio: usize = events
        .iter()
        .map(|e| match e {
            PartEvent::BinaryChunk(c) => c.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(audio, 640);
    assert_eq!(events.last(), Some(&PartEvent::BinaryEnd));
}

#[tokio::test]
async fn oversized_parts_are_skipped_and_reading_goes_on() {
    let mut w = RelatedWriter::new();
    let mut body = BytesMut::new();
    body.extend_from_slice(&w.json_part(&format!(r#"{{"x":"{}"}}"#, "a".repeat(5000))));
    body.extend_from_slice(&w.binary_part_start("big"));
    body.extend_from_slice(&vec![7u8; 10_000]);
    body.extend_from_slice(&w.binary_part_end());
    body.extend_from_slice(&w.json_part(r#"{"ok":true}"#));
    body.extend_from_slice(&w.finish());
    let stream = futures_util::stream::iter(
        body.freeze()
            .chunks(512)
            .map(|c| Ok::<_, Infallible>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let limits = Limits {
        json_part_bytes: 1024,
        binary_part_bytes: 4096,
    };
    let mut r = PartReader::new(&w.content_type(), MultipartKind::Related, stream, limits).unwrap();
    let mut events = Vec::new();
    while let Some(e) = r.next().await.unwrap() {
        events.push(e);
    }
    assert!(matches!(
        events[0],
        PartEvent::Oversized {
            limit_bytes: 1024,
            ..
        }
    ));
    assert!(matches!(&events[1], PartEvent::BinaryStart { content_id: Some(c), .. } if c == "big"));
    assert!(events.iter().any(|e| matches!(
        e,
        PartEvent::Oversized {
            limit_bytes: 4096,
            ..
        }
    )));
    assert!(
        matches!(events.last(), Some(PartEvent::Json { body, .. }) if &body[..] == br#"{"ok":true}"#)
    );
}

#[test]
fn boundaries_and_content_ids() {
    assert_eq!(
        boundary(
            "multipart/related; boundary=abc; type=application/json",
            MultipartKind::Related
        )
        .unwrap(),
        "abc"
    );
    assert_eq!(
        boundary(
            "multipart/related; boundary=\"a b\"",
            MultipartKind::Related
        )
        .unwrap(),
        "a b"
    );
    assert!(matches!(
        boundary("multipart/form-data; boundary=x", MultipartKind::Related),
        Err(MultipartError::WrongContentType(..))
    ));
    assert!(matches!(
        boundary("multipart/related", MultipartKind::Related),
        Err(MultipartError::NoBoundary(_))
    ));
    assert!(boundary("application/json", MultipartKind::FormData).is_err());
    assert_eq!(content_id_of_url("cid:<TTS-1>").as_deref(), Some("TTS-1"));
    assert_eq!(content_id_of_url("cid:TTS-1").as_deref(), Some("TTS-1"));
    assert_eq!(content_id_of_url("https://x"), None);
}

#[tokio::test]
async fn garbage_is_an_error_not_a_panic() {
    let stream = futures_util::stream::iter(vec![Ok::<_, Infallible>(Bytes::from_static(
        b"\x00\xffgarbage--x\r\n",
    ))]);
    let mut r = PartReader::new(
        "multipart/related; boundary=x",
        MultipartKind::Related,
        stream,
        Limits::default(),
    )
    .unwrap();
    let mut n = 0;
    while let Ok(Some(_)) = r.next().await {
        n += 1;
        assert!(n < 100);
    }
    let _ = StreamExt::boxed(futures_util::stream::empty::<()>());
}
