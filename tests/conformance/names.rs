//! Names: every name a path may have survives a round trip exactly, and a
//! name that cannot be a path (a control character, a backslash, bytes
//! that are not UTF-8) is refused on its own, never taking the listing
//! down nor showing up under another name.

use crate::{Case, create, list, path_problems, paths, read, rel};

conformance!(
    odd_names_round_trip_exactly,
    unusable_names_are_refused_one_by_one
);

/// Names that are awkward in URLs, XML, shells or Unicode, but valid.
const ODD: &[&str] = &[
    "a b.txt",
    " leading space",
    "trailing space ",
    "100%.txt",
    "%41%2F.txt",
    "#hash",
    "q?x=1&y=2",
    "semi;colon",
    "<angle>&amp;",
    "quote\"s",
    "apos'",
    "plus+sign",
    "star*",
    "colon:",
    "ü é.txt",
    "日本語.txt",
    "🎉",
    "~tilde",
    "[b]{c}",
    "$dollar!",
    "=eq@at,",
    "dir #1 é",
];

fn odd_names_round_trip_exactly(case: &Case) {
    let replica = case.marked();
    let outside = case.outside();
    // Made by someone else on the server, and written by the replica.
    replica.mkdir(&rel("written"), None).unwrap();
    for name in ODD {
        outside.put(format!("planted/{name}/inside.txt"), format!("in {name}"));
        outside.put(format!("planted/{name}.file"), *name);
        replica
            .mkdir(&rel(&format!("written/{name}")), None)
            .unwrap();
        create(
            &*replica,
            &format!("written/{name}/inside.txt"),
            &format!("in {name}"),
        );
        create(&*replica, &format!("written/{name}.file"), name);
    }

    let listing = list(&*replica);
    let mut expected = vec!["planted".to_owned(), "written".to_owned()];
    for top in ["planted", "written"] {
        for name in ODD {
            expected.push(format!("{top}/{name}"));
            expected.push(format!("{top}/{name}/inside.txt"));
            expected.push(format!("{top}/{name}.file"));
        }
    }
    expected.sort();
    assert_eq!(paths(&listing), expected, "{:?}", listing.problems);
    assert!(path_problems(&listing).is_empty(), "{:?}", listing.problems);
    for name in ODD {
        for top in ["planted", "written"] {
            assert_eq!(read(&*replica, &format!("{top}/{name}.file")), *name);
        }
        assert_eq!(
            outside
                .read(&format!("written/{name}/inside.txt"))
                .as_deref(),
            Some(format!("in {name}").as_str()),
            "written under its own name"
        );
    }
}

/// Names no path may have: each is refused, with a problem naming it.
const UNUSABLE: &[&[u8]] = &[
    b"new\nline.txt",
    b"back\\slash.txt",
    b"tab\there.txt",
    b"latin1-\xe9.txt",
];

fn unusable_names_are_refused_one_by_one(case: &Case) {
    let replica = case.marked();
    let outside = case.outside();
    outside.put("ok.txt", "fine");
    outside.put("folder/ok.txt", "fine too");
    let unusable: Vec<&[u8]> = UNUSABLE
        .iter()
        .copied()
        .filter(|name| outside.holds(name))
        .collect();
    for name in &unusable {
        outside.put(name, "refused");
        outside.put([b"folder/", *name].concat(), "refused");
        // A folder with such a name, and everything in it.
        outside.put([*name, b"-dir/inside.txt"].concat(), "refused");
    }

    let listing = list(&*replica);
    let mut expected: std::collections::BTreeSet<String> = ["folder", "folder/ok.txt", "ok.txt"]
        .map(str::to_owned)
        .into();
    for name in &unusable {
        if !outside.shows_as_is(name) {
            // The server shows it under a usable name of its own: control
            // characters as their pictures (rclone), a backslash as a
            // folder separator (SeaweedFS), bytes that are not UTF-8 as
            // some UTF-8 (S3 keys are UTF-8).
            let shown: String = String::from_utf8_lossy(name)
                .chars()
                .map(|c| match c {
                    c if c.is_ascii_control() => char::from_u32(0x2400 + c as u32).unwrap(),
                    '\\' => '/',
                    c => c,
                })
                .collect();
            for path in [
                shown.clone(),
                format!("folder/{shown}"),
                format!("{shown}-dir/inside.txt"),
            ] {
                // With the folders it lies in.
                let mut at = path.as_str();
                expected.insert(at.to_owned());
                while let Some((parent, _)) = at.rsplit_once('/') {
                    expected.insert(parent.to_owned());
                    at = parent;
                }
            }
        }
    }
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(paths(&listing), expected, "{:?}", listing.problems);
    assert!(
        listing
            .tree
            .keys()
            .all(|p| !p.as_str().starts_with(".prism")),
        "the metadata folder is never listed"
    );
    // Each refused name is a problem of its own (none hides the others),
    // which shows the name.
    let problems: Vec<&str> = listing
        .problems
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    for name in unusable.iter().filter(|name| outside.shows_as_is(name)) {
        let raw = String::from_utf8_lossy(name);
        let prefix: String = raw
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let count = problems.iter().filter(|p| p.contains(&prefix)).count();
        assert!(
            count >= 3,
            "{raw:?} refused in each of its three places: {problems:#?}"
        );
    }
}
