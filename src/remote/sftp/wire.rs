//! The few SFTP (version 3) packets the [`pipe`](super::pipe) sends and
//! reads, written out by hand: libssh2 speaks the protocol one request at
//! a time, and a listing of many folders needs many requests in flight.
//! The packet layout is draft-ietf-secsh-filexfer-02, the version OpenSSH
//! speaks. Every length an answer carries is checked against what is left
//! of the packet before anything is allocated for it: a server's answer is
//! input like any other.

use std::io::{self, Read};

use ssh2::FileStat;

/// The protocol version asked for (and the only one spoken).
pub(super) const VERSION: u32 = 3;

/// The largest answer read: OpenSSH's own limit is 256 KiB; a longer
/// length can only be a broken or hostile stream.
const MAX_PACKET: usize = 1 << 20;

/// The most entries one folder's listing collects, whichever way it is
/// read: a server that sends pages of names without end must not take all
/// the memory there is. A million is far past any real folder (WebDAV
/// stops at about 150,000 a folder).
pub(super) const MAX_FOLDER_ENTRIES: usize = 1_000_000;

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_CLOSE: u8 = 4;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_NAME: u8 = 104;

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// `SSH_FX_EOF`: a folder has no more entries.
pub(super) const STATUS_EOF: u32 = 1;

/// `SSH_FX_FAILURE`: the request failed for a reason the protocol has no
/// code of its own for.
pub(super) const STATUS_FAILURE: u32 = 4;

/// A request the pipe sends.
#[derive(Clone, Copy, Debug)]
pub(super) enum Request<'a> {
    /// Open a folder (its path as the server spells it).
    OpenDir(&'a [u8]),
    /// Read the next entries of an open folder (its handle).
    ReadDir(&'a [u8]),
    /// Close a handle.
    Close(&'a [u8]),
}

/// An answer to one request.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    Handle(Vec<u8>),
    Status {
        code: u32,
        message: String,
    },
    /// Entries of a folder: each name as the server sent it and its
    /// attributes.
    Name(Vec<(Vec<u8>, FileStat)>),
}

/// Appends the `INIT` packet that opens the protocol.
pub(super) fn encode_init(out: &mut Vec<u8>) {
    let start = begin(out, FXP_INIT);
    out.extend_from_slice(&VERSION.to_be_bytes());
    finish(out, start);
}

/// Appends the packet of `request` with the id `id`.
pub(super) fn encode(id: u32, request: Request<'_>, out: &mut Vec<u8>) {
    let (kind, field) = match request {
        Request::OpenDir(path) => (FXP_OPENDIR, path),
        Request::ReadDir(handle) => (FXP_READDIR, handle),
        Request::Close(handle) => (FXP_CLOSE, handle),
    };
    let start = begin(out, kind);
    out.extend_from_slice(&id.to_be_bytes());
    put_string(out, field);
    finish(out, start);
}

fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

/// Writes the length of the packet that starts at `start`.
fn finish(out: &mut [u8], start: usize) {
    let len = u32::try_from(out.len() - start - 4).expect("an SFTP request under 4 GiB");
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("an SFTP string under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads one packet: its type and payload.
pub(super) fn read_packet(from: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(malformed(format!("a packet of {len} bytes")));
    }
    let mut kind = [0u8; 1];
    from.read_exact(&mut kind)?;
    let mut payload = vec![0u8; len - 1];
    from.read_exact(&mut payload)?;
    Ok((kind[0], payload))
}

/// The protocol version in the server's `VERSION` packet (its extensions
/// are not needed here).
pub(super) fn decode_version(kind: u8, payload: &[u8]) -> io::Result<u32> {
    if kind != FXP_VERSION {
        return Err(malformed(format!(
            "packet type {kind} where VERSION belongs"
        )));
    }
    Fields(payload).u32()
}

/// The request id and the reply a packet carries.
pub(super) fn decode_reply(kind: u8, payload: &[u8]) -> io::Result<(u32, Reply)> {
    let mut fields = Fields(payload);
    let id = fields.u32()?;
    let reply = match kind {
        FXP_HANDLE => Reply::Handle(fields.string()?.to_vec()),
        FXP_STATUS => {
            let code = fields.u32()?;
            // The message and language tag are optional in older servers.
            let message = if fields.0.is_empty() {
                String::new()
            } else {
                String::from_utf8_lossy(fields.string()?).into_owned()
            };
            Reply::Status { code, message }
        }
        FXP_NAME => {
            let count = fields.u32()? as usize;
            // A name, a long name and the flags: 12 bytes at the least.
            if count > fields.0.len() / 12 {
                return Err(malformed(format!(
                    "{count} names in {} bytes",
                    payload.len()
                )));
            }
            let mut names = Vec::with_capacity(count);
            for _ in 0..count {
                let name = fields.string()?.to_vec();
                let _long_name = fields.string()?;
                names.push((name, fields.attrs()?));
            }
            Reply::Name(names)
        }
        other => return Err(malformed(format!("unexpected packet type {other}"))),
    };
    Ok((id, reply))
}

/// The fields of a packet still to be read.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(malformed(format!(
                "a field of {n} bytes where {} are left",
                self.0.len()
            )));
        }
        let (field, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(field)
    }

    fn u32(&mut self) -> io::Result<u32> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn string(&mut self) -> io::Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn attrs(&mut self) -> io::Result<FileStat> {
        let flags = self.u32()?;
        let size = (flags & ATTR_SIZE != 0).then(|| self.u64()).transpose()?;
        let (uid, gid) = if flags & ATTR_UIDGID != 0 {
            (Some(self.u32()?), Some(self.u32()?))
        } else {
            (None, None)
        };
        let perm = (flags & ATTR_PERMISSIONS != 0)
            .then(|| self.u32())
            .transpose()?;
        let (atime, mtime) = if flags & ATTR_ACMODTIME != 0 {
            (Some(u64::from(self.u32()?)), Some(u64::from(self.u32()?)))
        } else {
            (None, None)
        };
        if flags & ATTR_EXTENDED != 0 {
            let count = self.u32()?;
            for _ in 0..count {
                self.string()?;
                self.string()?;
            }
        }
        Ok(FileStat {
            size,
            uid,
            gid,
            perm,
            atime,
            mtime,
        })
    }
}

/// An answer that makes no sense (what is wrong with it in `what`).
pub(super) fn malformed(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the server's SFTP answer makes no sense: {what}"),
    )
}

/// What is said of a folder whose listing passed [`MAX_FOLDER_ENTRIES`]:
/// that folder is not synced, the rest of the listing stands.
pub(super) fn too_many_entries() -> String {
    format!(
        "the server listed more than {MAX_FOLDER_ENTRIES} entries in this folder (the same \
         names again and again?); it is not synced"
    )
}

/// The server's side of the packets, for scripted servers in tests.
#[cfg(test)]
pub(super) mod server_side {
    use super::*;

    /// A request's type, id and string field (a path or a handle).
    pub fn decode_request(kind: u8, payload: &[u8]) -> (u8, u32, Vec<u8>) {
        let mut fields = Fields(payload);
        let id = fields.u32().unwrap();
        (kind, id, fields.string().unwrap().to_vec())
    }

    pub fn version(out: &mut Vec<u8>) {
        let start = begin(out, FXP_VERSION);
        out.extend_from_slice(&VERSION.to_be_bytes());
        finish(out, start);
    }

    pub fn handle(id: u32, handle: &[u8], out: &mut Vec<u8>) {
        let start = begin(out, FXP_HANDLE);
        out.extend_from_slice(&id.to_be_bytes());
        put_string(out, handle);
        finish(out, start);
    }

    pub fn status(id: u32, code: u32, message: &str, out: &mut Vec<u8>) {
        let start = begin(out, FXP_STATUS);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        put_string(out, message.as_bytes());
        put_string(out, b"en");
        finish(out, start);
    }

    /// A page of names, each a file of `size` bytes.
    pub fn names(id: u32, names: &[&str], size: u64, out: &mut Vec<u8>) {
        let start = begin(out, FXP_NAME);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(names.len() as u32).to_be_bytes());
        for name in names {
            put_string(out, name.as_bytes());
            put_string(out, name.as_bytes());
            out.extend_from_slice(&(ATTR_SIZE | ATTR_PERMISSIONS).to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&0o100644u32.to_be_bytes());
        }
        finish(out, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `NAME` packet as a server would send it.
    fn name_packet(id: u32, names: &[(&str, u32, u64)]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&(names.len() as u32).to_be_bytes());
        for (name, perm, size) in names {
            put_string(&mut p, name.as_bytes());
            put_string(&mut p, format!("-rw-r--r-- 1 u g {size} {name}").as_bytes());
            let flags = ATTR_SIZE | ATTR_PERMISSIONS | ATTR_ACMODTIME;
            p.extend_from_slice(&flags.to_be_bytes());
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&perm.to_be_bytes());
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(&9u32.to_be_bytes());
        }
        p
    }

    #[test]
    fn a_request_is_its_length_type_id_and_string() {
        let mut out = Vec::new();
        encode(7, Request::OpenDir(b"/srv/a"), &mut out);
        assert_eq!(
            out,
            [
                &[0, 0, 0, 15, FXP_OPENDIR, 0, 0, 0, 7, 0, 0, 0, 6][..],
                b"/srv/a"
            ]
            .concat()
        );
        let mut init = Vec::new();
        encode_init(&mut init);
        assert_eq!(init, [0, 0, 0, 5, FXP_INIT, 0, 0, 0, 3]);
    }

    #[test]
    fn names_are_read_with_their_attributes() {
        let packet = name_packet(3, &[("a.txt", 0o100644, 12), ("sub", 0o040755, 4096)]);
        let (id, reply) = decode_reply(FXP_NAME, &packet).unwrap();
        assert_eq!(id, 3);
        let Reply::Name(names) = reply else {
            panic!("not names: {reply:?}")
        };
        assert_eq!(names.len(), 2);
        assert_eq!(names[0].0, b"a.txt");
        assert_eq!(names[0].1.size, Some(12));
        assert_eq!(names[0].1.perm, Some(0o100644));
        assert_eq!((names[0].1.atime, names[0].1.mtime), (Some(7), Some(9)));
        assert_eq!(names[1].0, b"sub");
        assert_eq!(names[1].1.uid, None);
    }

    #[test]
    fn a_status_without_its_message_is_read() {
        let packet = [0, 0, 0, 9, 0, 0, 0, 1];
        assert_eq!(
            decode_reply(FXP_STATUS, &packet).unwrap(),
            (
                9,
                Reply::Status {
                    code: STATUS_EOF,
                    message: String::new()
                }
            )
        );
    }

    #[test]
    fn lengths_past_the_packet_are_refused_before_anything_is_allocated() {
        // A name count no packet of this size can hold.
        let mut packet = name_packet(1, &[("a", 0o100644, 1)]);
        packet[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = decode_reply(FXP_NAME, &packet).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // A string longer than what is left.
        let mut packet = name_packet(1, &[("a", 0o100644, 1)]);
        packet[8..12].copy_from_slice(&1000u32.to_be_bytes());
        assert!(decode_reply(FXP_NAME, &packet).is_err());
        // Every prefix of a good packet is refused, never read past.
        let packet = name_packet(1, &[("abc", 0o100644, 1), ("d", 0o040755, 2)]);
        for cut in 0..packet.len() {
            assert!(
                decode_reply(FXP_NAME, &packet[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_packet_length_out_of_bounds_is_refused() {
        let huge = (MAX_PACKET as u32 + 1).to_be_bytes();
        let e = read_packet(&mut &huge[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = read_packet(&mut &[0u8, 0, 0, 0][..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let (kind, payload) = read_packet(&mut &[0u8, 0, 0, 2, FXP_HANDLE, 5][..]).unwrap();
        assert_eq!((kind, payload), (FXP_HANDLE, vec![5]));
    }

    #[test]
    fn an_unexpected_packet_type_is_refused() {
        assert!(decode_reply(FXP_INIT, &[0, 0, 0, 1]).is_err());
        assert!(decode_version(FXP_HANDLE, &[0, 0, 0, 3]).is_err());
        assert_eq!(decode_version(FXP_VERSION, &[0, 0, 0, 3]).unwrap(), 3);
    }
}
