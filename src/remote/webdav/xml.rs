//! Parsing of PROPFIND answers: the RFC 4918 `multistatus` document, read
//! as a stream of events with `quick-xml` (a small pull parser: it expands
//! no DTD and no custom entity, so an answer cannot make it fetch or
//! multiply anything).
//!
//! It owns only the XML: which elements carry the href, the resource type,
//! the length, the modification date and the ETag of each response, under
//! the `DAV:` namespace whatever prefix the server chose. It does not judge
//! hrefs (the caller checks that they lie inside the share) and does not
//! bound the input: the caller hands it a reader that stops at a size
//! limit. Nesting deeper than [`MAX_DEPTH`] and text longer than
//! [`MAX_TEXT`] are refused, so a hostile answer costs bounded memory.

use std::io::BufRead;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};

/// A multistatus answer is four or five levels deep; anything much deeper
/// is not one.
pub const MAX_DEPTH: usize = 64;

/// The longest text an element may carry (an href, a date, an ETag).
pub const MAX_TEXT: usize = 16 * 1024;

const DAV: Namespace<'static> = Namespace(b"DAV:");

/// One `<response>` of a multistatus answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropResponse {
    /// The href as sent (still percent-encoded).
    pub href: String,
    pub collection: bool,
    pub length: Option<u64>,
    /// `getlastmodified` as sent (an RFC 1123 date).
    pub last_modified: Option<String>,
    /// `getetag` as sent, with its quotes (and `W/` for a weak one).
    pub etag: Option<String>,
    /// False when the response's own status is not a success (a resource
    /// that vanished while it was listed, say).
    pub found: bool,
}

/// Why an answer is not a usable multistatus document.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("the answer is not a DAV multistatus document")]
    NotMultistatus,
    #[error("the answer nests elements deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("an element's text is longer than {MAX_TEXT} bytes")]
    TextTooLong,
}

/// The text-bearing elements we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Href,
    Length,
    LastModified,
    Etag,
    /// The status of a whole response.
    Status,
    /// The status of one propstat.
    PropstatStatus,
}

/// Where an open element sits, as far as the parser cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Multistatus,
    Response,
    Propstat,
    Prop,
    ResourceType,
    Field(Field),
    Other,
}

/// The props of one `<propstat>`, applied only when its status is a
/// success.
#[derive(Default)]
struct Props {
    collection: bool,
    length: Option<u64>,
    last_modified: Option<String>,
    etag: Option<String>,
    status_ok: Option<bool>,
}

/// Parses a multistatus document into its responses, in document order.
pub fn parse_multistatus<R: BufRead>(input: R) -> Result<Vec<PropResponse>, XmlError> {
    let mut reader = NsReader::from_reader(input);
    let mut buf = Vec::new();
    let mut stack: Vec<Node> = Vec::new();
    let mut out = Vec::new();
    let mut response: Option<PropResponse> = None;
    let mut props = Props::default();
    let mut text = String::new();
    let mut seen_root = false;
    let malformed = |reader: &NsReader<R>, message: String| XmlError::Malformed {
        position: reader.buffer_position(),
        message,
    };
    loop {
        buf.clear();
        let (ns, event) =
            reader
                .read_resolved_event_into(&mut buf)
                .map_err(|e| XmlError::Malformed {
                    position: 0,
                    message: e.to_string(),
                })?;
        let is_dav = matches!(ns, ResolveResult::Bound(n) if n == DAV);
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let local = e.local_name();
                let name = if is_dav { local.as_ref() } else { b"" };
                let parent = stack.last().copied();
                let node = match (parent, name) {
                    (None, b"multistatus") => Node::Multistatus,
                    (None, _) => return Err(XmlError::NotMultistatus),
                    (Some(Node::Multistatus), b"response") => Node::Response,
                    (Some(Node::Response), b"href") => Node::Field(Field::Href),
                    (Some(Node::Response), b"status") => Node::Field(Field::Status),
                    (Some(Node::Response), b"propstat") => Node::Propstat,
                    (Some(Node::Propstat), b"prop") => Node::Prop,
                    (Some(Node::Propstat), b"status") => Node::Field(Field::PropstatStatus),
                    (Some(Node::Prop), b"resourcetype") => Node::ResourceType,
                    (Some(Node::Prop), b"getcontentlength") => Node::Field(Field::Length),
                    (Some(Node::Prop), b"getlastmodified") => Node::Field(Field::LastModified),
                    (Some(Node::Prop), b"getetag") => Node::Field(Field::Etag),
                    (Some(Node::ResourceType), b"collection") => {
                        props.collection = true;
                        Node::Other
                    }
                    _ => Node::Other,
                };
                if node == Node::Multistatus {
                    seen_root = true;
                }
                if node == Node::Response {
                    response = Some(PropResponse {
                        found: true,
                        ..PropResponse::default()
                    });
                }
                if node == Node::Propstat {
                    props = Props::default();
                }
                text.clear();
                if !empty {
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep);
                    }
                    stack.push(node);
                } else {
                    close(node, &mut response, &mut props, &mut text, &mut out);
                }
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| malformed(&reader, "an end tag without a start".into()))?;
                close(node, &mut response, &mut props, &mut text, &mut out);
            }
            Event::Text(t) => {
                if matches!(stack.last(), Some(Node::Field(_))) {
                    let decoded = t.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                    push_text(&mut text, &decoded)?;
                }
            }
            Event::CData(t) => {
                if matches!(stack.last(), Some(Node::Field(_))) {
                    let decoded = t.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                    push_text(&mut text, &decoded)?;
                }
            }
            Event::GeneralRef(r) => {
                if matches!(stack.last(), Some(Node::Field(_))) {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = r.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| {
                                    malformed(&reader, format!("unknown entity &{name};"))
                                })?
                                .to_owned()
                        }
                        Err(e) => return Err(malformed(&reader, e.to_string())),
                    };
                    push_text(&mut text, &resolved)?;
                }
            }
            Event::DocType(_) => {
                return Err(malformed(
                    &reader,
                    "a DOCTYPE is not allowed in a DAV answer".into(),
                ));
            }
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(malformed(&reader, "the document ends too early".into()));
                }
                if !seen_root {
                    return Err(XmlError::NotMultistatus);
                }
                return Ok(out);
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

fn push_text(text: &mut String, more: &str) -> Result<(), XmlError> {
    if text.len() + more.len() > MAX_TEXT {
        return Err(XmlError::TextTooLong);
    }
    text.push_str(more);
    Ok(())
}

/// Applies what an element that just closed carried.
fn close(
    node: Node,
    response: &mut Option<PropResponse>,
    props: &mut Props,
    text: &mut String,
    out: &mut Vec<PropResponse>,
) {
    let value = std::mem::take(text).trim().to_owned();
    match node {
        Node::Field(Field::Href) => {
            if let Some(r) = response.as_mut() {
                r.href = value;
            }
        }
        Node::Field(Field::Length) => props.length = value.parse().ok(),
        Node::Field(Field::LastModified) => props.last_modified = Some(value),
        Node::Field(Field::Etag) => props.etag = Some(value).filter(|v| !v.is_empty()),
        Node::Field(Field::Status) => {
            if let Some(r) = response.as_mut() {
                r.found = status_is_success(&value);
            }
        }
        Node::Field(Field::PropstatStatus) => props.status_ok = Some(status_is_success(&value)),
        Node::Propstat => {
            let taken = std::mem::take(props);
            if taken.status_ok.unwrap_or(true)
                && let Some(r) = response.as_mut()
            {
                r.collection |= taken.collection;
                r.length = taken.length.or(r.length);
                r.last_modified = taken.last_modified.or(r.last_modified.take());
                r.etag = taken.etag.or(r.etag.take());
            }
        }
        Node::Response => {
            // A response without an href names nothing (RFC 4918 requires
            // one). Dropping it also keeps the answer's cost in memory
            // proportional to what it names: a run of `<D:response/>`
            // otherwise costs some 24 bytes of output per byte of input.
            if let Some(r) = response.take().filter(|r| !r.href.is_empty()) {
                out.push(r);
            }
        }
        _ => {}
    }
}

/// `HTTP/1.1 200 OK`: the code is the second word.
fn status_is_success(line: &str) -> bool {
    line.split_whitespace()
        .nth(1)
        .map(|code| code.len() == 3 && code.starts_with('2'))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<PropResponse>, XmlError> {
        parse_multistatus(text.as_bytes())
    }

    #[test]
    fn props_are_read_under_any_prefix_and_failed_propstats_are_ignored() {
        let answer = r#"<?xml version="1.0"?>
<x:multistatus xmlns:x="DAV:" xmlns:o="urn:other">
 <x:response><x:href>/dav/a%20b.txt</x:href>
  <x:propstat><x:prop>
   <x:resourcetype/><x:getcontentlength>12</x:getcontentlength>
   <x:getlastmodified>Wed, 25 Nov 2026 10:27:19 GMT</x:getlastmodified>
   <x:getetag>"5-abc"</x:getetag><o:getetag>"ignored"</o:getetag>
  </x:prop><x:status>HTTP/1.1 200 OK</x:status></x:propstat>
  <x:propstat><x:prop><x:getetag>"not found"</x:getetag></x:prop>
   <x:status>HTTP/1.1 404 Not Found</x:status></x:propstat>
 </x:response>
 <response xmlns="DAV:"><href>/dav/sub/</href>
  <propstat><prop><resourcetype><collection/></resourcetype></prop>
  <status>HTTP/1.1 200 OK</status></propstat></response>
 <x:response><x:href>/dav/gone&amp;x</x:href><x:status>HTTP/1.1 404 Not Found</x:status></x:response>
</x:multistatus>"#;
        let responses = parse(answer).unwrap();
        assert_eq!(responses.len(), 3);
        assert_eq!(responses[0].href, "/dav/a%20b.txt");
        assert!(!responses[0].collection);
        assert_eq!(responses[0].length, Some(12));
        assert_eq!(responses[0].etag.as_deref(), Some("\"5-abc\""));
        assert_eq!(
            responses[0].last_modified.as_deref(),
            Some("Wed, 25 Nov 2026 10:27:19 GMT")
        );
        assert!(responses[0].found);
        assert!(responses[1].collection);
        assert_eq!(responses[2].href, "/dav/gone&x");
        assert!(!responses[2].found);
    }

    /// Found by the PROPFIND fuzz target: 65 KB of `<D:response/>` made
    /// 1.5 MB of empty responses.
    #[test]
    fn responses_without_an_href_are_dropped() {
        let empty = format!(
            "<D:multistatus xmlns:D=\"DAV:\">{}<D:response><D:href> </D:href></D:response>\
             <D:response><D:href>/dav/a</D:href></D:response></D:multistatus>",
            "<D:response/>".repeat(5000)
        );
        let responses = parse(&empty).unwrap();
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].href, "/dav/a");
    }

    #[test]
    fn broken_and_hostile_documents_are_errors() {
        assert!(matches!(
            parse("<html>hello</html>"),
            Err(XmlError::NotMultistatus)
        ));
        assert!(parse("").is_err());
        assert!(parse("<D:multistatus xmlns:D=\"DAV:\"><D:response>").is_err());
        assert!(parse("<D:multistatus xmlns:D=\"DAV:\"></D:response>").is_err());
        let doctype = "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><D:multistatus xmlns:D=\"DAV:\"/>";
        assert!(parse(doctype).is_err());
        let deep = format!(
            "<D:multistatus xmlns:D=\"DAV:\">{}",
            "<a>".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(parse(&deep), Err(XmlError::TooDeep)));
        let long = format!(
            "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>{}</D:href></D:response></D:multistatus>",
            "a".repeat(MAX_TEXT + 1)
        );
        assert!(matches!(parse(&long), Err(XmlError::TextTooLong)));
    }
}
