//! Management mode (`remoteingress-bin --management`): JSON lines on stdin/stdout.
//!
//! The wiring: `reader` turns stdin into capped lines; `dispatch` decodes each into a request and
//! runs it in its own task against the [`Service`]; `writer` is the only writer of stdout. Engine
//! events flow from the `EventSink` to the same writer. The first line written is `ready`.
//! stdin EOF, SIGTERM and SIGINT all end the session the same way: stop the role, flush, return.

pub(crate) mod dispatch;
pub(crate) mod reader;
pub(crate) mod writer;

use std::sync::Arc;

use remoteingress_ipc_schema::{Event, IpcErrorEvent, ReadyEvent, PROTOCOL_VERSION};
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio_util::task::TaskTracker;

use crate::events::EventSink;
use crate::service::Service;
use dispatch::Decoded;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests that may run at once. Past it stdin is not read until one finishes, so a caller
/// that sends faster than it reads the answers is held back instead of growing our memory (the
/// answers of running requests wait in the writer's bounded queue).
pub(crate) const MAX_IN_FLIGHT: usize = 256;
use reader::{InputLine, LineReader, MAX_LINE_BYTES};
use writer::LineWriter;

/// Serves the management protocol until `input` ends or `shutdown` resolves.
pub async fn serve<R, W>(
    input: R,
    output: W,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (writer, writer_task) = LineWriter::spawn(output);
    writer
        .event(&Event::Ready(ReadyEvent {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        }))
        .await;

    let (events, mut event_rx) = EventSink::channel();
    let service = Arc::new(Service::new(events));
    let requests = TaskTracker::new();
    let mut lines = LineReader::new(input, MAX_LINE_BYTES);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A slot for the next request, taken before its line is read.
    let mut slot: Option<OwnedSemaphorePermit> = None;
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutdown signal received");
                break;
            }
            Some(event) = event_rx.recv() => {
                writer.event(&event).await;
                continue;
            }
            permit = in_flight.clone().acquire_owned(), if slot.is_none() => {
                slot = permit.ok();
                continue;
            }
            next = lines.next_line(), if slot.is_some() => next,
        };
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) => {
                tracing::info!("stdin closed");
                break;
            }
            Err(error) => {
                tracing::error!(%error, "cannot read stdin");
                break;
            }
        };
        match line {
            InputLine::Oversized { prefix, len } => {
                writer
                    .event(&Event::IpcError(IpcErrorEvent {
                        message: format!(
                            "line of {len} bytes exceeds the {MAX_LINE_BYTES}-byte limit; discarded"
                        ),
                        line: dispatch::quote(&prefix),
                    }))
                    .await;
            }
            InputLine::Line(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {}
            InputLine::Line(bytes) => match dispatch::decode_line(&bytes) {
                Decoded::Invalid(event) => writer.event(&Event::IpcError(event)).await,
                Decoded::Refused(response) => {
                    writer
                        .response(&remoteingress_ipc_schema::Response::Err(response))
                        .await
                }
                Decoded::Request(request) => {
                    let service = service.clone();
                    let writer = writer.clone();
                    let permit = slot.take();
                    requests.spawn(async move {
                        let response = dispatch::handle(service, request).await;
                        writer.response(&response).await;
                        drop(permit);
                    });
                }
            },
        }
    }

    crate::daemon::stop(&service).await;
    requests.close();
    // Requests still in flight (e.g. a long ping) get a moment to answer, not forever.
    if tokio::time::timeout(std::time::Duration::from_secs(2), requests.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still running at shutdown were abandoned");
    }
    // Events the role emitted while stopping (e.g. edgeDisconnected) still go out.
    while let Ok(event) = event_rx.try_recv() {
        writer.event(&event).await;
    }
    writer.finish();
    writer_task.await.unwrap_or_else(|e| {
        Err(std::io::Error::other(format!(
            "stdout writer task failed: {e}"
        )))
    })
}
