//! What the API streams: a run's log as it grows (`?follow=true`), and
//! the Server-Sent Events stream of run state changes, resumable from a
//! cursor (`GET /api/v1/events?since=SEQ`, or `Last-Event-ID`).
//!
//! One task per server polls the store for the newest event position and
//! publishes it on a `watch` channel; each stream queries the store only
//! when that position moves past its own, so idle streams cost nothing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Api;
use crate::store::{RunEvent, RunKind, Store};

/// How often the store is asked for new events, and a followed log for
/// new bytes.
pub const POLL: Duration = Duration::from_millis(200);
/// Events read from the store at once.
const BATCH: i64 = 200;

/// Publishes the newest event position until `stop`.
pub async fn publish_events(store: Store, tx: watch::Sender<i64>, stop: CancellationToken) {
    loop {
        match store.last_event().await {
            Ok(seq) => {
                tx.send_if_modified(|v| {
                    let newer = seq > *v;
                    if newer {
                        *v = seq;
                    }
                    newer
                });
            }
            Err(e) => tracing::warn!(error = %e, "reading the newest event"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The events after `since` (of `kind` if given) as Server-Sent Events:
/// `id` is the position to resume after, `event` the run's kind, `data`
/// the event as JSON. Never ends by itself.
pub fn events(
    api: Arc<Api>,
    since: i64,
    kind: Option<RunKind>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let newest = api.events.subscribe();
    let state = (api, since, newest, VecDeque::<RunEvent>::new());
    let stream = futures_util::stream::unfold(
        state,
        move |(api, mut cursor, mut newest, mut pending)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    let out = Event::default()
                        .id(ev.seq.to_string())
                        .event(ev.kind.as_str())
                        .json_data(&ev)
                        .unwrap_or_else(|_| Event::default().comment("unencodable event"));
                    return Some((Ok(out), (api, cursor, newest, pending)));
                }
                if *newest.borrow_and_update() > cursor {
                    match api
                        .toolchains
                        .store()
                        .events_after(cursor, kind, BATCH)
                        .await
                    {
                        Ok(batch) => {
                            // Skipped events of another kind move the cursor too.
                            cursor = batch.last().map(|e| e.seq).unwrap_or(*newest.borrow());
                            pending.extend(batch);
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reading events");
                            tokio::time::sleep(POLL).await;
                            continue;
                        }
                    }
                }
                if newest.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A run's log from its start, then each line as it is written, until
/// the run is over and the log read to its end. The file is read where
/// this replica sees it; elsewhere, the copy a shared store keeps
/// (`store::logs`), whose byte positions are the file's.
pub fn follow_log(
    api: Arc<Api>,
    id: String,
    path: PathBuf,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(
        (api, id, path, None::<tokio::fs::File>, 0u64, false),
        |(api, id, path, mut file, mut offset, mut done)| async move {
            loop {
                if file.is_none() {
                    file = tokio::fs::File::open(&path).await.ok();
                }
                let store = api.toolchains.store();
                if let Some(f) = file.as_mut() {
                    let mut buf = vec![0u8; 64 * 1024];
                    if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                        if let Ok(n) = f.read(&mut buf).await {
                            if n > 0 {
                                offset += n as u64;
                                buf.truncate(n);
                                return Some((
                                    Ok(Bytes::from(buf)),
                                    (api, id, path, file, offset, done),
                                ));
                            }
                        }
                    }
                } else if store.shared() {
                    if let Ok((bytes, next)) = store.stored_log(&id, offset as i64, 16).await {
                        if !bytes.is_empty() {
                            offset = next as u64;
                            return Some((
                                Ok(Bytes::from(bytes)),
                                (api, id, path, file, offset, done),
                            ));
                        }
                    }
                }
                if done {
                    return None;
                }
                // Over: one more read picks up the last lines written
                // before the final state.
                done = match store.get_run(&id).await {
                    Ok(Some(run)) => run.state.is_final(),
                    Ok(None) => true,
                    Err(_) => false,
                };
                if !done {
                    tokio::time::sleep(POLL).await;
                }
            }
        },
    )
}

/// A run's whole log as it stands: its file where this replica sees it,
/// else the copy a shared store keeps; empty if neither exists yet.
pub async fn read_log(
    api: &Api,
    id: &str,
    path: &std::path::Path,
) -> Result<Vec<u8>, crate::Error> {
    match tokio::fs::read(path).await {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::Error::io(path, e)),
    }
    let store = api.toolchains.store();
    let mut out = Vec::new();
    if store.shared() {
        loop {
            let (bytes, next) = store.stored_log(id, out.len() as i64, 64).await?;
            if bytes.is_empty() {
                break;
            }
            debug_assert_eq!(next as usize, out.len() + bytes.len());
            out.extend_from_slice(&bytes);
        }
    }
    Ok(out)
}
