//! The header of a WebSocket frame (RFC 6455 §5.2), read from the bytes
//! gathered so far: the one reader of it, for the tunnel's frame tracker
//! (`proxy::websocket`) and the audit's frame reader
//! (`audit::kernel_frames`). Imports nothing else of the crate.

/// Bytes a frame header takes at most: 2, an 8-byte length, a 4-byte mask.
pub const MAX_HEADER: usize = 14;

/// A complete frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN: the last frame of its message.
    pub fin: bool,
    /// RSV1: set on a compressed message's first frame (permessage-deflate).
    pub rsv1: bool,
    pub opcode: u8,
    /// The masking key (client frames), applied by payload position.
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// The header at the start of `bytes` once all of it is there (`None`
/// while more header bytes are needed).
pub fn header(bytes: &[u8]) -> Option<Header> {
    let (&b0, rest) = bytes.split_first()?;
    let &b1 = rest.first()?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let need = 2 + ext + if masked { 4 } else { 0 };
    if bytes.len() < need {
        return None;
    }
    let payload_len = match ext {
        0 => u64::from(len7),
        2 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[2..10]);
            u64::from_be_bytes(b)
        }
    };
    let mask = masked.then(|| {
        let at = 2 + ext;
        [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]
    });
    Some(Header {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0F,
        mask,
        payload_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_read_once_complete_in_each_length_form() {
        assert_eq!(header(&[0x81]), None);
        let h = header(&[0x81, 0x05]).expect("7-bit");
        assert_eq!((h.fin, h.opcode, h.payload_len, h.mask), (true, 1, 5, None));
        assert_eq!(header(&[0x02, 0xFE, 0x01]), None);
        let h = header(&[0x02, 0xFE, 0x01, 0x2C, 1, 2, 3, 4]).expect("16-bit masked");
        assert_eq!(
            (h.fin, h.payload_len, h.mask),
            (false, 300, Some([1, 2, 3, 4]))
        );
        let mut b = vec![0xC1, 0x7F];
        b.extend_from_slice(&70_000u64.to_be_bytes());
        let h = header(&b).expect("64-bit");
        assert_eq!((h.rsv1, h.payload_len), (true, 70_000));
    }
}
