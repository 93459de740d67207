//! A second SFTP channel on a session, spoken directly ([`wire`]) so that
//! many requests are in flight at once. libssh2 sends one request and
//! waits for its answer; listing a tree that way costs four or five round
//! trips a folder (open, read, read to the end, close). The pipe sends the
//! same requests for a batch of folders together and reads the answers as
//! they come, so a batch costs the round trips of one folder. Everything
//! else stays on libssh2's own SFTP channel.
//!
//! The requests of a round are all written before any answer is read.
//! They are small (a path or a handle each), so writing them never waits
//! on the server, and the answers of a batch of [`BATCH`] folders fit in
//! the channel's window: the server never stalls on answers nobody reads.
//! Answers that arrive while a round is still being written wait in
//! libssh2's buffer. (A channel is never `flush`ed: libssh2's flush throws
//! away what was received and not yet read.)

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStringExt;

use ssh2::{Channel, ExtendedData, FileStat, Session};

use super::wire::{self, Reply, Request};

/// The most folders listed together: their answers (at most about a
/// hundred entries each a round, as OpenSSH sends them) stay well inside
/// the 2 MiB window libssh2 opens a channel with.
pub(super) const BATCH: usize = 32;

/// How many rounds in a row may bring no entry and no end before the
/// server is taken to be stuck (SFTP never sends an empty page, but a
/// server that did once must not break the listing).
const IDLE_ROUNDS: usize = 8;

/// An SFTP channel of its own (`S`: the stream it is spoken on), with
/// requests pipelined.
pub(super) struct Pipe<S: Read + Write = Channel> {
    channel: BufReader<S>,
    next_id: u32,
    /// The packets of a round, before they are written.
    out: Vec<u8>,
}

/// What the server answered for one folder it could not list.
#[derive(Debug)]
pub(super) struct Refusal {
    pub code: u32,
    pub message: String,
}

/// The entries of one folder (without `.` and `..`), names as the server
/// sent them, or the server's refusal.
pub(super) type Folder = Result<Vec<(OsString, FileStat)>, Refusal>;

impl Pipe {
    /// Opens the channel and agrees on the protocol version. An error is
    /// the session's (or a server that gives a session one channel only).
    pub fn open(session: &Session) -> io::Result<Pipe> {
        let mut channel = session.channel_session()?;
        // What the server writes to its stderr would otherwise fill the
        // channel's window, unread, until the server stalls.
        channel.handle_extended_data(ExtendedData::Ignore)?;
        channel.subsystem("sftp")?;
        Pipe::start(channel)
    }
}

impl<S: Read + Write> Pipe<S> {
    /// Agrees on the protocol version on `channel`, an SFTP server's
    /// stream.
    fn start(mut channel: S) -> io::Result<Pipe<S>> {
        let mut out = Vec::new();
        wire::encode_init(&mut out);
        channel.write_all(&out)?;
        let mut channel = BufReader::with_capacity(64 * 1024, channel);
        let (kind, payload) = wire::read_packet(&mut channel)?;
        let version = wire::decode_version(kind, &payload)?;
        if version != wire::VERSION {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the server speaks SFTP version {version}, not 3"),
            ));
        }
        out.clear();
        Ok(Pipe {
            channel,
            next_id: 0,
            out,
        })
    }

    /// Lists the folders at `dirs` (paths on the server), each to its end;
    /// one result per folder, in order. An `Err` is about the pipe (the
    /// connection broke, or an answer made no sense): it is not usable
    /// again, and no folder's result is.
    pub fn list_folders(&mut self, dirs: &[&[u8]]) -> io::Result<Vec<Folder>> {
        let count = dirs.len();
        let mut results: Vec<Option<Folder>> = (0..count).map(|_| None).collect();
        let mut entries: Vec<Vec<(OsString, FileStat)>> = vec![Vec::new(); count];
        let mut handles: Vec<Option<Vec<u8>>> = vec![None; count];

        let opens = dirs.iter().map(|dir| Request::OpenDir(dir)).enumerate();
        for (i, reply) in self.round(opens.collect())? {
            match reply {
                Reply::Handle(handle) => handles[i] = Some(handle),
                Reply::Status { code, message } => {
                    results[i] = Some(Err(Refusal { code, message }))
                }
                Reply::Name(_) => return Err(wire::malformed("names where a handle belongs")),
            }
        }

        let mut idle_rounds = 0;
        loop {
            let reads: Vec<(usize, Request<'_>)> = (0..count)
                .filter(|&i| results[i].is_none())
                .filter_map(|i| Some((i, Request::ReadDir(handles[i].as_deref()?))))
                .collect();
            if reads.is_empty() {
                break;
            }
            let mut progress = false;
            for (i, reply) in self.round(reads)? {
                match reply {
                    Reply::Name(names) => {
                        progress |= !names.is_empty();
                        let named = names.into_iter().filter(|(n, _)| n != b"." && n != b"..");
                        entries[i].extend(named.map(|(n, stat)| (OsString::from_vec(n), stat)));
                        if entries[i].len() > wire::MAX_FOLDER_ENTRIES {
                            // That folder alone: its handle is closed with
                            // the others, every answer was read.
                            entries[i] = Vec::new();
                            results[i] = Some(Err(Refusal {
                                code: wire::STATUS_FAILURE,
                                message: wire::too_many_entries(),
                            }));
                        }
                    }
                    Reply::Status {
                        code: wire::STATUS_EOF,
                        ..
                    } => {
                        progress = true;
                        results[i] = Some(Ok(std::mem::take(&mut entries[i])));
                    }
                    Reply::Status { code, message } => {
                        progress = true;
                        results[i] = Some(Err(Refusal { code, message }));
                    }
                    Reply::Handle(_) => return Err(wire::malformed("a handle where names belong")),
                }
            }
            // A server answering with empty pages forever would keep this
            // loop going forever.
            idle_rounds = if progress { 0 } else { idle_rounds + 1 };
            if idle_rounds == IDLE_ROUNDS {
                return Err(wire::malformed("folder pages without entries"));
            }
        }

        // A folder read to its end is read, whatever its close answers.
        let closes: Vec<(usize, Request<'_>)> = handles
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| Some((i, Request::Close(handle.as_deref()?))))
            .collect();
        if !closes.is_empty() {
            self.round(closes)?;
        }
        Ok(results
            .into_iter()
            .map(|result| result.expect("every folder was answered"))
            .collect())
    }

    /// Sends `requests` together and reads one answer to each, matched by
    /// its id (a server may answer in any order): each answer with the
    /// index its request came with.
    fn round(&mut self, requests: Vec<(usize, Request<'_>)>) -> io::Result<Vec<(usize, Reply)>> {
        let mut waiting = HashMap::with_capacity(requests.len());
        self.out.clear();
        for (index, request) in requests {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            wire::encode(id, request, &mut self.out);
            waiting.insert(id, index);
        }
        self.channel.get_mut().write_all(&self.out)?;
        let mut answers = Vec::with_capacity(waiting.len());
        while !waiting.is_empty() {
            let (kind, payload) = wire::read_packet(&mut self.channel)?;
            let (id, reply) = wire::decode_reply(kind, &payload)?;
            let index = waiting
                .remove(&id)
                .ok_or_else(|| wire::malformed("an answer to no request"))?;
            answers.push((index, reply));
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::super::wire::server_side;
    use super::*;

    /// An SFTP server played from a script: folders by path, each its
    /// names or the status code it is refused with. Answers come when the
    /// client flushes, every round's in reverse order (a server may answer
    /// in any order).
    struct Scripted {
        folders: HashMap<Vec<u8>, Result<Vec<String>, u32>>,
        /// Open handles: the folder's path and how many names were sent.
        open: HashMap<Vec<u8>, (Vec<u8>, usize)>,
        page: usize,
        /// Empty pages sent before the names (`usize::MAX`: forever).
        empty_pages: usize,
        /// The folder whose same page of names is sent again and again.
        endless: Option<Vec<u8>>,
        /// Answers every request with an id nobody asked for.
        wrong_ids: bool,
        /// Answers nothing more (the connection went).
        gone: bool,
        /// The most bytes one write takes: answers to the packets complete
        /// so far come while the rest is still being written.
        chunk: usize,
        written: Vec<u8>,
        answers: VecDeque<u8>,
        rounds: usize,
        closed: usize,
    }

    impl Scripted {
        fn new(folders: &[(&str, Result<Vec<String>, u32>)]) -> Scripted {
            Scripted {
                folders: folders
                    .iter()
                    .map(|(path, folder)| (path.as_bytes().to_vec(), folder.clone()))
                    .collect(),
                open: HashMap::new(),
                page: 100,
                empty_pages: 0,
                endless: None,
                wrong_ids: false,
                gone: false,
                chunk: 40,
                written: Vec::new(),
                answers: VecDeque::new(),
                rounds: 0,
                closed: 0,
            }
        }

        fn answer(&mut self, kind: u8, payload: &[u8], out: &mut Vec<u8>) {
            if kind == 1 {
                server_side::version(out);
                return;
            }
            let (kind, id, field) = server_side::decode_request(kind, payload);
            let id = if self.wrong_ids { id + 1000 } else { id };
            match kind {
                11 => match self.folders.get(&field) {
                    Some(Ok(_)) => {
                        let handle = format!("h{}", self.open.len() + self.closed);
                        self.open.insert(handle.clone().into_bytes(), (field, 0));
                        server_side::handle(id, handle.as_bytes(), out);
                    }
                    Some(Err(code)) => server_side::status(id, *code, "refused", out),
                    None => server_side::status(id, 2, "No such file", out),
                },
                12 => {
                    let (path, sent) = self.open.get_mut(&field).expect("an open handle");
                    let Some(Ok(names)) = self.folders.get(path.as_slice()) else {
                        panic!("a handle of a folder that lists");
                    };
                    if self.empty_pages > 0 {
                        self.empty_pages = self.empty_pages.saturating_sub(1);
                        server_side::names(id, &[], 5, out);
                        return;
                    }
                    let page: Vec<&str> = names
                        .iter()
                        .skip(*sent)
                        .take(self.page)
                        .map(String::as_str)
                        .collect();
                    if page.is_empty() {
                        server_side::status(id, wire::STATUS_EOF, "", out);
                    } else {
                        if self.endless.as_ref() != Some(path) {
                            *sent += page.len();
                        }
                        server_side::names(id, &page, 5, out);
                    }
                }
                4 => {
                    self.open.remove(&field).expect("an open handle");
                    self.closed += 1;
                    server_side::status(id, 0, "", out);
                }
                other => panic!("unexpected request type {other}"),
            }
        }
    }

    impl Write for Scripted {
        /// Takes up to `chunk` bytes and answers the packets they complete,
        /// those of one write in reverse order.
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let taken = buf.len().min(self.chunk);
            // A round starts with a write after its answers were read.
            if self.written.is_empty() && self.answers.is_empty() {
                self.rounds += 1;
            }
            self.written.extend_from_slice(&buf[..taken]);
            if self.gone {
                return Ok(taken);
            }
            let mut answers = Vec::new();
            loop {
                let mut rest = &self.written[..];
                let Ok((kind, payload)) = wire::read_packet(&mut rest) else {
                    break;
                };
                let used = self.written.len() - rest.len();
                self.written.drain(..used);
                let mut answer = Vec::new();
                self.answer(kind, &payload, &mut answer);
                answers.push(answer);
            }
            for answer in answers.into_iter().rev() {
                self.answers.extend(answer);
            }
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            panic!("a channel is never flushed: libssh2's flush drops what was received");
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.answers.len());
            for (slot, byte) in buf.iter_mut().zip(self.answers.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    fn names(count: usize) -> Vec<String> {
        let mut names = vec![".".to_owned(), "..".to_owned()];
        names.extend((0..count).map(|i| format!("f{i:03}")));
        names
    }

    fn listed(folder: &Folder) -> Vec<String> {
        let entries = folder.as_ref().expect("a listed folder");
        entries
            .iter()
            .map(|(name, stat)| {
                assert_eq!((stat.size, stat.perm), (Some(5), Some(0o100644)));
                name.to_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn folders_are_listed_together_each_to_its_end_in_the_rounds_of_one() {
        let server = Scripted::new(&[
            ("/r/big", Ok(names(250))),
            ("/r/empty", Ok(names(0))),
            ("/r/locked", Err(3)),
        ]);
        let mut pipe = Pipe::start(server).unwrap();
        let dirs: [&[u8]; 4] = [b"/r/big", b"/r/gone", b"/r/empty", b"/r/locked"];
        let folders = pipe.list_folders(&dirs).unwrap();
        assert_eq!(folders.len(), 4);
        assert_eq!(listed(&folders[0]), names(250)[2..]);
        assert!(matches!(&folders[1], Err(Refusal { code: 2, .. })));
        assert_eq!(listed(&folders[2]), Vec::<String>::new());
        assert!(matches!(&folders[3], Err(Refusal { code: 3, .. })));
        let server = pipe.channel.get_ref();
        assert_eq!(server.closed, 2, "every handle opened is closed");
        assert!(server.open.is_empty());
        // The handshake, the opens, three pages of 100 and the end of the
        // big folder, the closes: the round trips of the one folder.
        assert_eq!(server.rounds, 1 + 1 + 4 + 1);
        // The pipe goes on with the next batch.
        let again = pipe.list_folders(&[b"/r/empty"]).unwrap();
        assert_eq!(listed(&again[0]), Vec::<String>::new());
    }

    #[test]
    fn an_answer_to_no_request_breaks_the_pipe() {
        let mut pipe = Pipe::start(Scripted::new(&[("/r/a", Ok(names(3)))])).unwrap();
        pipe.channel.get_mut().wrong_ids = true;
        let e = pipe.list_folders(&[b"/r/a"]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("an answer to no request"), "{e}");
    }

    #[test]
    fn a_few_pages_without_entries_do_not_break_the_pipe() {
        let mut pipe = Pipe::start(Scripted::new(&[("/r/a", Ok(names(3)))])).unwrap();
        pipe.channel.get_mut().empty_pages = IDLE_ROUNDS - 1;
        let folders = pipe.list_folders(&[b"/r/a"]).unwrap();
        assert_eq!(listed(&folders[0]), names(3)[2..]);
    }

    #[test]
    fn pages_without_entries_that_never_end_break_the_pipe() {
        let mut pipe = Pipe::start(Scripted::new(&[("/r/a", Ok(names(3)))])).unwrap();
        pipe.channel.get_mut().empty_pages = usize::MAX;
        let e = pipe.list_folders(&[b"/r/a"]).unwrap_err();
        assert!(e.to_string().contains("pages without entries"), "{e}");
    }

    #[test]
    fn a_folder_whose_pages_of_names_never_end_is_refused_alone() {
        let folders = [("/r/a", Ok(names(1000))), ("/r/b", Ok(names(3)))];
        let mut pipe = Pipe::start(Scripted::new(&folders)).unwrap();
        pipe.channel.get_mut().page = 1000;
        pipe.channel.get_mut().endless = Some(b"/r/a".to_vec());
        let folders = pipe.list_folders(&[b"/r/a", b"/r/b"]).unwrap();
        let refused = folders[0].as_ref().unwrap_err();
        assert_eq!(refused.code, wire::STATUS_FAILURE);
        assert!(
            refused.message.contains("more than 1000000 entries"),
            "{refused:?}"
        );
        assert_eq!(
            listed(&folders[1]),
            names(3)[2..],
            "the other folder stands"
        );
        // Both handles were closed, and the pipe still lists.
        assert!(pipe.channel.get_ref().open.is_empty());
        assert_eq!(
            listed(&pipe.list_folders(&[b"/r/b"]).unwrap()[0]),
            names(3)[2..]
        );
    }

    #[test]
    fn a_stream_that_ends_mid_answer_is_an_error() {
        let mut server = Scripted::new(&[]);
        server.gone = true;
        // The version packet is cut short: the stream ends.
        server.answers.extend([0, 0, 0, 5, 2, 0]);
        let e = Pipe::start(server).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
