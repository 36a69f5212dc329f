//! The target's TCP command: one byte naming the operation and a u64 BE argument, sent right
//! after the (optional) PROXY header.

use anyhow::Result;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::CHUNK;

/// Length of a command on the wire.
pub(crate) const COMMAND_LEN: usize = 9;

/// Largest message size an `Echo` command may ask for.
pub(crate) const MAX_ECHO_SIZE: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `U` n: the client uploads n bytes; the target answers `ok` at the end.
    Upload,
    /// `D` n: the target sends n bytes, then closes.
    Download,
    /// `S` (argument ignored): the target discards everything until EOF.
    Sink,
    /// `R` n: the target echoes every n-byte message back until EOF.
    Echo,
}

impl Op {
    const fn byte(self) -> u8 {
        match self {
            Self::Upload => b'U',
            Self::Download => b'D',
            Self::Sink => b'S',
            Self::Echo => b'R',
        }
    }

    const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'U' => Some(Self::Upload),
            b'D' => Some(Self::Download),
            b'S' => Some(Self::Sink),
            b'R' => Some(Self::Echo),
            _ => None,
        }
    }

    pub(crate) fn encode(self, argument: u64) -> [u8; COMMAND_LEN] {
        let mut command = [0u8; COMMAND_LEN];
        command[0] = self.byte();
        command[1..].copy_from_slice(&argument.to_be_bytes());
        command
    }

    pub(crate) fn decode(command: &[u8; COMMAND_LEN]) -> Option<(Self, u64)> {
        let op = Self::from_byte(command[0])?;
        let mut argument = [0u8; 8];
        argument.copy_from_slice(&command[1..]);
        Some((op, u64::from_be_bytes(argument)))
    }
}

/// Writes `total` zero bytes in [`CHUNK`]-sized writes: the payload of an upload (client) or a
/// download (target).
pub(crate) async fn send_zeros<W: AsyncWrite + Unpin>(writer: &mut W, total: u64) -> Result<()> {
    let buf = vec![0u8; CHUNK];
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        writer.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for op in [Op::Upload, Op::Download, Op::Sink, Op::Echo] {
            assert_eq!(Op::decode(&op.encode(64)), Some((op, 64)));
        }
        assert_eq!(Op::decode(&[b'X'; COMMAND_LEN]), None);
    }
}
