//! The only task that writes stdout (esbuild's single-writer rule): every protocol line, response
//! or event, goes through one bounded queue, so lines never interleave and stdout carries nothing
//! but protocol.

use remoteingress_ipc_schema::{Event, Response};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Capacity of the outgoing line queue.
const OUTGOING_CAPACITY: usize = 4096;

/// A cloneable handle that queues lines for stdout.
#[derive(Clone, Debug)]
pub(crate) struct LineWriter {
    tx: mpsc::Sender<String>,
    finish: CancellationToken,
}

impl LineWriter {
    /// Starts the writer task over `out`; it ends when every handle is dropped or
    /// [`LineWriter::finish`] is called, after writing what is queued and flushing.
    pub(crate) fn spawn<W>(out: W) -> (Self, tokio::task::JoinHandle<std::io::Result<()>>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(OUTGOING_CAPACITY);
        let finish = CancellationToken::new();
        let task = tokio::spawn(write_lines(out, rx, finish.clone()));
        (Self { tx, finish }, task)
    }

    /// Queues a response; waits while the queue is full (responses must never be dropped).
    pub(crate) async fn response(&self, response: &Response) {
        self.line(serialize(response)).await;
    }

    /// Queues an event; waits while the queue is full.
    pub(crate) async fn event(&self, event: &Event) {
        self.line(serialize(event)).await;
    }

    /// Asks the writer task to write what is queued, flush and end, even if handles remain
    /// (a request task abandoned at shutdown must not keep the process alive).
    pub(crate) fn finish(&self) {
        self.finish.cancel();
    }

    async fn line(&self, line: String) {
        if self.tx.send(line).await.is_err() {
            tracing::debug!("stdout writer is gone; line not written");
        }
    }
}

fn serialize<T: serde::Serialize>(value: &T) -> String {
    // Our own types always serialise; a failure would be a bug, reported instead of panicking.
    serde_json::to_string(value).unwrap_or_else(|error| {
        tracing::error!(%error, "could not serialise an IPC line");
        r#"{"event":"ipcError","data":{"message":"internal serialisation error","line":""}}"#
            .to_owned()
    })
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut out: W,
    mut rx: mpsc::Receiver<String>,
    finish: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let first = tokio::select! {
            biased;
            line = rx.recv() => match line {
                Some(line) => line,
                None => break,
            },
            () = finish.cancelled() => match rx.try_recv() {
                Ok(line) => line,
                Err(_) => break,
            },
        };
        let mut batch = first;
        batch.push('\n');
        // Write whatever else is already queued in the same syscall, then flush once.
        while let Ok(next) = rx.try_recv() {
            batch.push_str(&next);
            batch.push('\n');
            if batch.len() > 1 << 20 {
                break;
            }
        }
        out.write_all(batch.as_bytes()).await?;
        out.flush().await?;
    }
    out.flush().await
}
