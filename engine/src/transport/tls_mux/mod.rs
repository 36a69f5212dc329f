// TEMPORARY compile shim — replaced by the real multiplexer.
#![allow(missing_docs, dead_code, unreachable_pub, clippy::all)]
use crate::transport::frame::Frame;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Edge,
    Hub,
}
#[derive(Debug, Clone, Copy)]
pub struct WindowSettings {
    pub min: u32,
    pub max: u32,
    pub budget: u64,
}
#[derive(Debug, Clone, Copy)]
pub struct MuxConfig {
    pub side: Side,
    pub window: WindowSettings,
}
pub struct Mux;
#[derive(Debug, Clone)]
pub struct MuxHandle;
#[derive(Debug)]
pub struct MuxIncoming {
    pub streams: mpsc::Receiver<(MuxStream, Bytes)>,
    pub control: mpsc::Receiver<Frame>,
    pub datagrams: mpsc::Receiver<Frame>,
}
#[derive(Debug)]
pub struct MuxStream;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct MuxError;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct MuxCloseReason;
impl Mux {
    pub fn start<T: AsyncRead + AsyncWrite + Send + 'static>(
        _io: T,
        _l: BytesMut,
        _c: MuxConfig,
        _t: CancellationToken,
    ) -> (MuxHandle, MuxIncoming) {
        unimplemented!()
    }
}
impl MuxHandle {
    pub fn try_send_datagram(&self, _f: Frame) -> Result<(), MuxError> {
        unimplemented!()
    }
    pub fn open_stream(&self, _p: Bytes) -> Result<MuxStream, MuxError> {
        unimplemented!()
    }
    pub fn send_control(&self, _f: Frame) -> Result<(), MuxError> {
        unimplemented!()
    }
    pub fn active_streams(&self) -> usize {
        0
    }
    pub fn close(&self) {}
    pub fn is_closed(&self) -> bool {
        true
    }
    pub async fn closed(&self) -> MuxCloseReason {
        MuxCloseReason
    }
}
impl MuxStream {
    pub fn id(&self) -> u32 {
        0
    }
}
impl AsyncRead for MuxStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        unimplemented!()
    }
}
impl AsyncWrite for MuxStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        unimplemented!()
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        unimplemented!()
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        unimplemented!()
    }
}
