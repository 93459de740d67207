//! Parsing of S3's XML answers (listings, errors, multipart results) with
//! `quick-xml`, into a small tree of elements matched by local name (some
//! servers leave out S3's namespace, some add prefixes).
//!
//! It owns only the XML and its bounds: the caller hands it a reader that
//! stops at a size cap, and here nesting deeper than [`MAX_DEPTH`], more
//! than [`MAX_ELEMENTS`] elements and text longer than [`MAX_TEXT`] are
//! refused, so a hostile answer costs bounded memory. quick-xml expands no
//! DTD and no custom entity; a DOCTYPE is refused outright. A document
//! that ends early or does not close its elements is an error, never a
//! partial result.

use std::io::BufRead;

use quick_xml::Reader;
use quick_xml::events::Event;

/// S3 answers nest four levels at most; anything much deeper is not one.
pub const MAX_DEPTH: usize = 16;

/// A listing page of 1,000 keys has about 8,000 elements.
pub const MAX_ELEMENTS: usize = 100_000;

/// The longest text an element may carry: a key (1,024 bytes, three times
/// that URL-encoded), a continuation token, an error message.
pub const MAX_TEXT: usize = 16 * 1024;

/// One element: its local name, its text and its children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child named `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Why an answer is not a usable XML document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("the answer is not XML (no root element)")]
    Empty,
    #[error("the answer nests elements deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the answer has more than {MAX_ELEMENTS} elements")]
    TooMany,
    #[error("an element's text is longer than {MAX_TEXT} bytes")]
    TextTooLong,
}

/// Parses a whole document into its root element.
pub fn parse<R: BufRead>(input: R) -> Result<Element, XmlError> {
    let mut reader = Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        buf.clear();
        let position = reader.buffer_position();
        let malformed = |message: String| XmlError::Malformed { position, message };
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(e.to_string()))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(malformed("content after the root element".into()));
                }
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooMany);
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let element = Element {
                    name,
                    ..Element::default()
                };
                if matches!(event, Event::Empty(_)) {
                    attach(&mut stack, &mut root, element);
                } else {
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep);
                    }
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| malformed("an end tag without a start".into()))?;
                attach(&mut stack, &mut root, element);
            }
            Event::Text(t) => {
                let decoded = t.decode().map_err(|e| malformed(e.to_string()))?;
                push_text(&mut stack, &decoded)?;
            }
            Event::CData(t) => {
                let decoded = t.decode().map_err(|e| malformed(e.to_string()))?;
                push_text(&mut stack, &decoded)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.decode().map_err(|e| malformed(e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| malformed(format!("unknown entity &{name};")))?
                            .to_owned()
                    }
                    Err(e) => return Err(malformed(e.to_string())),
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::DocType(_) => {
                return Err(malformed("a DOCTYPE is not allowed in an S3 answer".into()));
            }
            Event::Eof => {
                if !stack.is_empty() {
                    return Err(malformed("the document ends too early".into()));
                }
                return root.ok_or(XmlError::Empty);
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn push_text(stack: &mut [Element], more: &str) -> Result<(), XmlError> {
    // Text outside the root (whitespace) belongs to nobody.
    let Some(current) = stack.last_mut() else {
        return Ok(());
    };
    if current.text.len() + more.len() > MAX_TEXT {
        return Err(XmlError::TextTooLong);
    }
    current.text.push_str(more);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_is_read_with_or_without_a_namespace_prefix() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<s3:ListBucketResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/">
  <s3:Contents><s3:Key>a&amp;b&#x41;</s3:Key><s3:Size>3</s3:Size></s3:Contents>
  <s3:Contents><s3:Key><![CDATA[c<d]]></s3:Key></s3:Contents>
  <s3:IsTruncated>false</s3:IsTruncated>
</s3:ListBucketResult>"#;
        let root = parse(doc.as_bytes()).unwrap();
        assert_eq!(root.name, "ListBucketResult");
        let keys: Vec<_> = root
            .all("Contents")
            .map(|c| c.text_of("Key").unwrap())
            .collect();
        assert_eq!(keys, ["a&bA", "c<d"]);
        assert_eq!(root.text_of("IsTruncated"), Some("false"));
    }

    #[test]
    fn truncated_malformed_and_hostile_documents_are_errors() {
        assert!(parse("".as_bytes()).is_err());
        assert!(parse("<ListBucketResult><Contents><Key>a</Key>".as_bytes()).is_err());
        assert!(parse("<a></b>".as_bytes()).is_err());
        assert!(parse("<a/><b/>".as_bytes()).is_err());
        assert!(parse("<a>&lol;</a>".as_bytes()).is_err());
        assert!(parse("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>".as_bytes()).is_err());
        assert_eq!(
            parse("<a>".repeat(MAX_DEPTH + 1).as_bytes()),
            Err(XmlError::TooDeep)
        );
        let long = format!("<a>{}</a>", "x".repeat(MAX_TEXT + 1));
        assert_eq!(parse(long.as_bytes()), Err(XmlError::TextTooLong));
        let many = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        assert_eq!(parse(many.as_bytes()), Err(XmlError::TooMany));
    }
}
