//! Which end of a tunnel this is, for both transports: it decides who opens streams, who
//! answers PING, and which frame types each end may send.

use std::fmt;

use crate::transport::frame::FrameType;

/// Which end of the tunnel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Edge,
    Hub,
}

impl Side {
    /// The other end.
    pub fn peer(self) -> Self {
        match self {
            Self::Edge => Self::Hub,
            Self::Hub => Self::Edge,
        }
    }

    /// Whether this side sends frames of `frame_type` (the "_BACK" types are the hub's).
    pub fn sends(self, frame_type: FrameType) -> bool {
        match frame_type {
            FrameType::Open
            | FrameType::Data
            | FrameType::Close
            | FrameType::WindowUpdate
            | FrameType::Pong
            | FrameType::UdpOpen
            | FrameType::UdpData => self == Self::Edge,
            FrameType::DataBack
            | FrameType::CloseBack
            | FrameType::WindowUpdateBack
            | FrameType::Config
            | FrameType::Ping
            | FrameType::UdpDataBack => self == Self::Hub,
            FrameType::UdpClose => true,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Edge => "edge",
            Self::Hub => "hub",
        })
    }
}
