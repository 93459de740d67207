//! The scenario table, Mutagen style: each row names a situation in plain
//! words, gives the three trees in a tiny notation, and lists the actions
//! and conflicts it must produce, under every policy it applies to. `check`
//! runs a row; it also applies the plan in the simulator and checks the
//! invariants every plan must keep (see `World::check_plan`).
//!
//! Tree notation, entries separated by spaces: `a=1` is the file `a` at
//! version 1 (`=0` an empty file), `d/` a folder, a suffix `@600` gives the
//! entry that mode (none: the side holds no modes), and a suffix `#7` gives
//! the entry the identity `7` (on a side; in the base, on both sides).
//! Folders above an entry are implied (without a mode).
//!
//! Action notation: `move remote a -> b`, `mkdir local d` (`mkdir local
//! d@700` with a mode), `copy remote a=2` (`over 1` when it replaces
//! version 1; `@600` when it is made with that mode), `chmod local a 644 ->
//! 600`, `delete local a=1` / `delete local d/`, `base a=2` / `base d/` /
//! `base a none` (`@600` with a mode). Conflicts: `kind path: base local
//! remote` with `-` for absent, `/` for a folder, a version for a file, and
//! ` keeps other` for a case collision.

use super::sim::{World, file, version};
use super::*;
use crate::model::{BaseEntry, FileId, Mode, SideEntry};

struct Row {
    name: &'static str,
    policies: &'static [Policy],
    base: &'static str,
    local: &'static str,
    remote: &'static str,
    actions: &'static [&'static str],
    conflicts: &'static [&'static str],
}

const SENSITIVE: Policy = Policy {
    local_case_insensitive: false,
    remote_case_insensitive: false,
    local_modes: true,
    remote_modes: true,
};
const LOCAL_CI: Policy = Policy {
    local_case_insensitive: true,
    remote_case_insensitive: false,
    local_modes: true,
    remote_modes: true,
};
const REMOTE_CI: Policy = Policy {
    local_case_insensitive: false,
    remote_case_insensitive: true,
    local_modes: true,
    remote_modes: true,
};
const BOTH_CI: Policy = Policy {
    local_case_insensitive: true,
    remote_case_insensitive: true,
    local_modes: true,
    remote_modes: true,
};
/// Rows without names that differ only in case behave the same everywhere.
const ALL: &[Policy] = &[SENSITIVE, LOCAL_CI, REMOTE_CI, BOTH_CI];

const ROWS: &[Row] = &[
    // One file, one side changed.
    Row {
        name: "nothing changed → nothing to do",
        policies: ALL,
        base: "a=1 d/x=2",
        local: "a=1 d/x=2",
        remote: "a=1 d/x=2",
        actions: &[],
        conflicts: &[],
    },
    Row {
        name: "local edited, remote untouched → upload",
        policies: ALL,
        base: "a=1",
        local: "a=2",
        remote: "a=1",
        actions: &["copy remote a=2 over 1"],
        conflicts: &[],
    },
    Row {
        name: "remote edited, local untouched → download",
        policies: ALL,
        base: "a=1",
        local: "a=1",
        remote: "a=2",
        actions: &["copy local a=2 over 1"],
        conflicts: &[],
    },
    Row {
        name: "local created → upload",
        policies: ALL,
        base: "",
        local: "a=1",
        remote: "",
        actions: &["copy remote a=1"],
        conflicts: &[],
    },
    Row {
        name: "remote created → download",
        policies: ALL,
        base: "",
        local: "",
        remote: "a=1",
        actions: &["copy local a=1"],
        conflicts: &[],
    },
    Row {
        name: "local deleted, remote untouched → delete on the remote",
        policies: ALL,
        base: "a=1",
        local: "",
        remote: "a=1",
        actions: &["delete remote a=1"],
        conflicts: &[],
    },
    Row {
        name: "remote deleted, local untouched → delete locally",
        policies: ALL,
        base: "a=1",
        local: "a=1",
        remote: "",
        actions: &["delete local a=1"],
        conflicts: &[],
    },
    // Permission bits.
    Row {
        name: "local chmod alone → chmod on the remote, no transfer",
        policies: ALL,
        base: "a=1@644",
        local: "a=1@600",
        remote: "a=1@644",
        actions: &["chmod remote a 644 -> 600"],
        conflicts: &[],
    },
    Row {
        name: "remote chmod alone (+x) → chmod locally",
        policies: ALL,
        base: "a=1@644",
        local: "a=1@644",
        remote: "a=1@755",
        actions: &["chmod local a 644 -> 755"],
        conflicts: &[],
    },
    Row {
        name: "the same chmod on both sides → base only",
        policies: ALL,
        base: "a=1@644",
        local: "a=1@600",
        remote: "a=1@600",
        actions: &["base a=1@600"],
        conflicts: &[],
    },
    Row {
        name: "different chmods on both sides → each keeps only the bits both allow",
        policies: ALL,
        base: "a=1@644",
        local: "a=1@640",
        remote: "a=1@604",
        actions: &["chmod local a 640 -> 600", "chmod remote a 604 -> 600"],
        conflicts: &[],
    },
    Row {
        name: "both sides created the same file with different modes → the narrower",
        policies: ALL,
        base: "",
        local: "a=1@600",
        remote: "a=1@644",
        actions: &["chmod remote a 644 -> 600"],
        conflicts: &[],
    },
    Row {
        name: "local created a private file → uploaded with its mode",
        policies: ALL,
        base: "",
        local: "a=1@600",
        remote: "",
        actions: &["copy remote a=1@600"],
        conflicts: &[],
    },
    Row {
        name: "local edited and made it executable → upload with the new mode",
        policies: ALL,
        base: "a=1@644",
        local: "a=2@755",
        remote: "a=1@644",
        actions: &["copy remote a=2@755 over 1"],
        conflicts: &[],
    },
    Row {
        name: "local edited, remote narrowed the mode → upload with the remote's mode, and chmod locally",
        policies: ALL,
        base: "a=1@644",
        local: "a=2@644",
        remote: "a=1@600",
        actions: &["copy remote a=2@600 over 1", "chmod local a 644 -> 600"],
        conflicts: &[],
    },
    Row {
        name: "a remote without modes edited → download keeps the local mode",
        policies: ALL,
        base: "a=1@600",
        local: "a=1@600",
        remote: "a=2",
        actions: &["copy local a=2@600 over 1"],
        conflicts: &[],
    },
    Row {
        name: "a remote without modes created → download with the default mode",
        policies: ALL,
        base: "",
        local: "",
        remote: "a=1",
        actions: &["copy local a=1"],
        conflicts: &[],
    },
    Row {
        name: "local chmod, a remote without modes → base only",
        policies: ALL,
        base: "a=1@644",
        local: "a=1@600",
        remote: "a=1",
        actions: &["base a=1@600"],
        conflicts: &[],
    },
    Row {
        name: "a base from before modes were kept → it records the modes both sides agree on",
        policies: ALL,
        base: "a=1 d/",
        local: "a=1@644 d/@755",
        remote: "a=1@644 d/@755",
        actions: &["base a=1@644", "base d/@755"],
        conflicts: &[],
    },
    Row {
        name: "local chmod of a folder → chmod the remote folder",
        policies: ALL,
        base: "d/@755",
        local: "d/@700",
        remote: "d/@755",
        actions: &["chmod remote d 755 -> 700"],
        conflicts: &[],
    },
    Row {
        name: "local created a private folder → created with its mode",
        policies: ALL,
        base: "",
        local: "d/@700 d/x=1@600",
        remote: "",
        actions: &["mkdir remote d@700", "copy remote d/x=1@600"],
        conflicts: &[],
    },
    Row {
        name: "local created a read-only folder with a file → created writable, filled, then given its mode",
        policies: ALL,
        base: "",
        local: "d/@500 d/x=1@400",
        remote: "",
        actions: &[
            "mkdir remote d@500",
            "copy remote d/x=1@400",
            "chmod remote d 700 -> 500",
        ],
        conflicts: &[],
    },
    Row {
        name: "local moved and narrowed a file → move, then chmod on the remote",
        policies: ALL,
        base: "a=1@644#1",
        local: "b=1@600#1",
        remote: "a=1@644",
        actions: &["move remote a -> b", "chmod remote b 644 -> 600"],
        conflicts: &[],
    },
    Row {
        name: "a chmod on one side, an edit on the other of a conflicted file → a conflict, no chmod",
        policies: ALL,
        base: "a=1@644",
        local: "a=2@600",
        remote: "a=3@644",
        actions: &[],
        conflicts: &["both_modified a: 1 2 3"],
    },
    // One file, both sides changed.
    Row {
        name: "identical edits on both sides → base only",
        policies: ALL,
        base: "a=1",
        local: "a=2",
        remote: "a=2",
        actions: &["base a=2"],
        conflicts: &[],
    },
    Row {
        name: "identical creations on both sides → base only",
        policies: ALL,
        base: "",
        local: "a=1",
        remote: "a=1",
        actions: &["base a=1"],
        conflicts: &[],
    },
    Row {
        name: "deleted on both sides → base forgets it",
        policies: ALL,
        base: "a=1",
        local: "",
        remote: "",
        actions: &["base a none"],
        conflicts: &[],
    },
    Row {
        name: "both edited differently → conflict",
        policies: ALL,
        base: "a=1",
        local: "a=2",
        remote: "a=3",
        actions: &[],
        conflicts: &["both_modified a: 1 2 3"],
    },
    Row {
        name: "both created differently → conflict",
        policies: ALL,
        base: "",
        local: "a=1",
        remote: "a=2",
        actions: &[],
        conflicts: &["both_created a: - 1 2"],
    },
    Row {
        name: "local deleted, remote edited → conflict",
        policies: ALL,
        base: "a=1",
        local: "",
        remote: "a=2",
        actions: &[],
        conflicts: &["local_deleted_remote_modified a: 1 - 2"],
    },
    Row {
        name: "local edited, remote deleted → conflict",
        policies: ALL,
        base: "a=1",
        local: "a=2",
        remote: "",
        actions: &[],
        conflicts: &["local_modified_remote_deleted a: 1 2 -"],
    },
    // Folders.
    Row {
        name: "local created a folder with a file → folder first, then upload",
        policies: ALL,
        base: "",
        local: "d/e/x=1",
        remote: "",
        actions: &["mkdir remote d", "mkdir remote d/e", "copy remote d/e/x=1"],
        conflicts: &[],
    },
    Row {
        name: "local deleted a folder, remote untouched → files, then the folder",
        policies: ALL,
        base: "d/x=1 d/y=2",
        local: "",
        remote: "d/x=1 d/y=2",
        actions: &[
            "delete remote d/x=1",
            "delete remote d/y=2",
            "delete remote d/",
        ],
        conflicts: &[],
    },
    Row {
        name: "both created the same folder → base only",
        policies: ALL,
        base: "",
        local: "d/",
        remote: "d/",
        actions: &["base d/"],
        conflicts: &[],
    },
    Row {
        name: "local deleted a folder, remote added a file in it → folder recreated locally",
        policies: ALL,
        base: "d/x=1",
        local: "",
        remote: "d/x=1 d/y=2",
        actions: &["mkdir local d", "copy local d/y=2", "delete remote d/x=1"],
        conflicts: &[],
    },
    Row {
        name: "local deleted a folder, remote edited a file in it → folder kept, conflict on the file",
        policies: ALL,
        base: "d/x=1 d/y=3",
        local: "",
        remote: "d/x=2 d/y=3",
        actions: &["mkdir local d", "delete remote d/y=3"],
        conflicts: &["local_deleted_remote_modified d/x: 1 - 2"],
    },
    // Files and folders trading places.
    Row {
        name: "remote replaced a file by a folder, local untouched → replaced locally",
        policies: ALL,
        base: "a=1",
        local: "a=1",
        remote: "a/x=2",
        actions: &["delete local a=1", "mkdir local a", "copy local a/x=2"],
        conflicts: &[],
    },
    Row {
        name: "local replaced a folder by a file, remote untouched → replaced on the remote",
        policies: ALL,
        base: "a/x=1",
        local: "a=2",
        remote: "a/x=1",
        actions: &["delete remote a/x=1", "delete remote a/", "copy remote a=2"],
        conflicts: &[],
    },
    Row {
        name: "local replaced a folder by a file, remote added inside → type conflict",
        policies: ALL,
        base: "a/x=1",
        local: "a=2",
        remote: "a/x=1 a/y=3",
        actions: &[],
        conflicts: &["type_changed a: / 2 /"],
    },
    Row {
        name: "local edited a file, remote replaced it by a folder → type conflict",
        policies: ALL,
        base: "a=1",
        local: "a=2",
        remote: "a/",
        actions: &[],
        conflicts: &["type_changed a: 1 2 /"],
    },
    Row {
        name: "local created a file where the remote created a folder → type conflict",
        policies: ALL,
        base: "",
        local: "a=1",
        remote: "a/x=2",
        actions: &[],
        conflicts: &["type_changed a: - 1 /"],
    },
    // Moves of files.
    Row {
        name: "local renamed a file, remote untouched → rename on the remote",
        policies: ALL,
        base: "a=1",
        local: "b=1",
        remote: "a=1",
        actions: &["move remote a -> b"],
        conflicts: &[],
    },
    Row {
        name: "local renamed a file, remote edited it → rename, then download the edit",
        policies: ALL,
        base: "a=1",
        local: "b=1",
        remote: "a=2",
        actions: &["move remote a -> b", "copy local b=2 over 1"],
        conflicts: &[],
    },
    Row {
        name: "local renamed and edited a file (same id) → new file plus deletion, as an id alone proves no rename",
        policies: ALL,
        base: "a=1#7",
        local: "b=2#7",
        remote: "a=1",
        actions: &["copy remote b=2", "delete remote a=1"],
        conflicts: &[],
    },
    Row {
        name: "a deleted file's inode reused by an unrelated new file → deletion plus new file, never a rename",
        policies: ALL,
        base: "notes/empty=0#7 notes/plan=1",
        local: "notes/plan=1 new/hello=2#7",
        remote: "notes/empty=0 notes/plan=1",
        actions: &[
            "mkdir remote new",
            "copy remote new/hello=2",
            "delete remote notes/empty=0",
        ],
        conflicts: &[],
    },
    Row {
        name: "local renamed a file keeping its id, remote edited it → rename, then download the edit",
        policies: ALL,
        base: "a=1#7",
        local: "b=1#7",
        remote: "a=3",
        actions: &["move remote a -> b", "copy local b=3 over 1"],
        conflicts: &[],
    },
    Row {
        name: "local renamed and edited a file, remote edited it too → both versions kept, nothing renamed",
        policies: ALL,
        base: "a=1#7",
        local: "b=2#7",
        remote: "a=3",
        actions: &["copy remote b=2"],
        conflicts: &["local_deleted_remote_modified a: 1 - 3"],
    },
    Row {
        name: "renamed and edited without identities → new file plus deletion",
        policies: ALL,
        base: "a=1",
        local: "b=2",
        remote: "a=1",
        actions: &["copy remote b=2", "delete remote a=1"],
        conflicts: &[],
    },
    Row {
        name: "empty files never pair as a rename",
        policies: ALL,
        base: "a=0",
        local: "b=0",
        remote: "a=0",
        actions: &["copy remote b=0", "delete remote a=0"],
        conflicts: &[],
    },
    Row {
        name: "two renamed files with the same content are ambiguous → copies and deletions",
        policies: ALL,
        base: "a=1 b=1",
        local: "c=1 d=1",
        remote: "a=1 b=1",
        actions: &[
            "copy remote c=1",
            "copy remote d=1",
            "delete remote a=1",
            "delete remote b=1",
        ],
        conflicts: &[],
    },
    Row {
        name: "both renamed the same way → base only",
        policies: ALL,
        base: "a=1",
        local: "b=1",
        remote: "b=1",
        actions: &["base a none", "base b=1"],
        conflicts: &[],
    },
    Row {
        name: "both renamed differently → both names kept",
        policies: ALL,
        base: "a=1",
        local: "b=1",
        remote: "c=1",
        actions: &["copy remote b=1", "copy local c=1", "base a none"],
        conflicts: &[],
    },
    Row {
        name: "local renamed onto a name the remote created → conflict at that name",
        policies: ALL,
        base: "a=1",
        local: "b=1",
        remote: "a=1 b=2",
        actions: &["delete remote a=1"],
        conflicts: &["both_created b: - 1 2"],
    },
    Row {
        name: "both renamed different files onto the same name → conflict at that name",
        policies: ALL,
        base: "a=1 b=2",
        local: "c=1 b=2",
        remote: "a=1 c=2",
        actions: &["delete remote a=1", "delete local b=2"],
        conflicts: &["both_created c: - 1 2"],
    },
    Row {
        name: "local renamed, remote deleted → the new name is uploaded",
        policies: ALL,
        base: "a=1",
        local: "b=1",
        remote: "",
        actions: &["copy remote b=1", "base a none"],
        conflicts: &[],
    },
    Row {
        name: "local moved a file into a new folder → folder created before the move",
        policies: ALL,
        base: "a=1",
        local: "n/a=1",
        remote: "a=1",
        actions: &["mkdir remote n", "move remote a -> n/a"],
        conflicts: &[],
    },
    // Moves of folders.
    Row {
        name: "local renamed a folder, remote edited a file inside → one move, edit at the new place",
        policies: ALL,
        base: "d/x=1 d/y=2",
        local: "e/x=1 e/y=2",
        remote: "d/x=3 d/y=2",
        actions: &["move remote d -> e", "copy local e/x=3 over 1"],
        conflicts: &[],
    },
    Row {
        name: "local renamed a folder, remote added a file inside → one move, download at the new place",
        policies: ALL,
        base: "d/x=1 d/y=2",
        local: "e/x=1 e/y=2",
        remote: "d/x=1 d/y=2 d/z=4",
        actions: &["move remote d -> e", "copy local e/z=4"],
        conflicts: &[],
    },
    Row {
        name: "local renamed a folder, remote deleted a file inside → one move, deletion at the new place",
        policies: ALL,
        base: "d/x=1 d/y=2",
        local: "e/x=1 e/y=2",
        remote: "d/x=1",
        actions: &["move remote d -> e", "delete local e/y=2"],
        conflicts: &[],
    },
    Row {
        name: "remote renamed a folder (ids), local edited inside → one move, upload at the new place",
        policies: ALL,
        base: "d/#1 d/x=1#2",
        local: "d/#1 d/x=2#2",
        remote: "e/#1 e/x=1#2",
        actions: &["move local d -> e", "copy remote e/x=2 over 1"],
        conflicts: &[],
    },
    Row {
        name: "a deleted folder's inode reused by an unrelated new folder → deletions plus new files, never a rename",
        policies: ALL,
        base: "drafts/#1 drafts/x=1#2",
        local: "photos/#1 photos/p=3#3",
        remote: "drafts/#1 drafts/x=1#2",
        actions: &[
            "mkdir remote photos",
            "copy remote photos/p=3",
            "delete remote drafts/x=1",
            "delete remote drafts/",
        ],
        conflicts: &[],
    },
    Row {
        name: "an empty folder renamed (same id) → one move",
        policies: ALL,
        base: "d/#1",
        local: "e/#1",
        remote: "d/#1",
        actions: &["move remote d -> e"],
        conflicts: &[],
    },
    Row {
        name: "folder renamed differently on both sides → both kept",
        policies: ALL,
        base: "d/x=1",
        local: "e/x=1",
        remote: "f/x=1",
        actions: &[
            "mkdir remote e",
            "mkdir local f",
            "copy remote e/x=1",
            "copy local f/x=1",
            "base d none",
            "base d/x none",
        ],
        conflicts: &[],
    },
    Row {
        name: "local renamed a folder, remote deleted it → the new folder is uploaded",
        policies: ALL,
        base: "d/x=1",
        local: "e/x=1",
        remote: "",
        actions: &[
            "mkdir remote e",
            "copy remote e/x=1",
            "base d none",
            "base d/x none",
        ],
        conflicts: &[],
    },
    Row {
        name: "nested: local renamed a folder, remote moved a file out of it → both moves",
        policies: ALL,
        base: "a/#10 a/x=1#1 a/y=2#2 c/#20",
        local: "b/#10 b/x=1#1 b/y=2#2 c/#20",
        remote: "a/#10 a/y=2#2 c/#20 c/x=1#1",
        actions: &["move remote a -> b", "move local b/x -> c/x"],
        conflicts: &[],
    },
    Row {
        name: "nested: local moved a file into a folder the remote renamed → both moves",
        policies: ALL,
        base: "a/#1 c=3#2",
        local: "a/#1 a/c=3#2",
        remote: "b/#1 c=3#2",
        actions: &["move local a -> b", "move remote c -> b/c"],
        conflicts: &[],
    },
    Row {
        name: "nested: local renamed a folder and a file inside it → both moves",
        policies: ALL,
        base: "a/#1 a/x=1#2 a/y=2#3",
        local: "b/#1 b/z=1#2 b/y=2#3",
        remote: "a/#1 a/x=1#2 a/y=2#3",
        actions: &["move remote a -> b", "move remote b/x -> b/z"],
        conflicts: &[],
    },
    Row {
        name: "nested: local moved a folder into a new folder, remote renamed a file inside → both moves, then the local edit",
        policies: ALL,
        base: "d/#1 d/f=4#2",
        local: "n/d/#1 n/d/f=5#2",
        remote: "d/F=4",
        actions: &[
            "mkdir remote n",
            "move remote d -> n/d",
            "move local n/d/f -> n/d/F",
            "copy remote n/d/F=5 over 4",
        ],
        conflicts: &[],
    },
    Row {
        name: "remote renamed a file in its folder and deleted an identical copy elsewhere, local edited the file → one move, then the edit goes up",
        policies: ALL,
        base: "a=1 d/x=1",
        local: "a=1 d/x=2",
        remote: "d/y=1",
        actions: &[
            "move local d/x -> d/y",
            "copy remote d/y=2 over 1",
            "delete local a=1",
        ],
        conflicts: &[],
    },
    // Names that differ only in case.
    Row {
        name: "remote created a name that differs in case from a local file → both kept where case matters",
        policies: &[SENSITIVE],
        base: "a=1",
        local: "a=1",
        remote: "a=1 A=2",
        actions: &["copy local A=2"],
        conflicts: &[],
    },
    Row {
        name: "remote created a name that differs in case from a local file → case conflict on a case-insensitive local side",
        policies: &[LOCAL_CI],
        base: "a=1",
        local: "a=1",
        remote: "a=1 A=2",
        actions: &[],
        conflicts: &["case_collision A: - - 2 keeps a"],
    },
    Row {
        name: "local created two names that differ in case → the first wins on a case-insensitive remote",
        policies: &[REMOTE_CI],
        base: "",
        local: "B=1 b=2",
        remote: "",
        actions: &["copy remote B=1"],
        conflicts: &["case_collision b: - 2 - keeps B"],
    },
    Row {
        name: "remote created a folder that differs in case from a local one → case conflict covers its contents",
        policies: &[LOCAL_CI],
        base: "docs/x=1",
        local: "docs/x=1",
        remote: "docs/x=1 Docs/y=2",
        actions: &[],
        conflicts: &["case_collision Docs: - - / keeps docs"],
    },
    Row {
        name: "remote moved a folder into a new folder differing only in case → moved where case matters",
        policies: &[SENSITIVE, REMOTE_CI],
        base: "b/a=1",
        local: "b/a=1",
        remote: "B/x/a=1",
        actions: &["mkdir local B", "move local b -> B/x"],
        conflicts: &[],
    },
    Row {
        name: "remote moved a folder into a new folder differing only in case → on a case-insensitive side old names go first",
        policies: &[LOCAL_CI, BOTH_CI],
        base: "b/a=1",
        local: "b/a=1",
        remote: "B/x/a=1",
        actions: &[
            "delete local b/a=1",
            "delete local b/",
            "mkdir local B",
            "mkdir local B/x",
            "copy local B/x/a=1",
        ],
        conflicts: &[],
    },
    Row {
        name: "remote changed only the case of a name → rename locally",
        policies: ALL,
        base: "readme=1",
        local: "readme=1",
        remote: "README=1",
        actions: &["move local readme -> README"],
        conflicts: &[],
    },
    Row {
        name: "remote changed the case and the content of a name → on a case-insensitive side the old name goes first",
        policies: &[LOCAL_CI, BOTH_CI],
        base: "readme=1",
        local: "readme=1",
        remote: "README=2",
        actions: &["delete local readme=1", "copy local README=2"],
        conflicts: &[],
    },
    Row {
        name: "remote changed the case and the content of a name → on a case-sensitive side copy, then delete",
        policies: &[SENSITIVE, REMOTE_CI],
        base: "readme=1",
        local: "readme=1",
        remote: "README=2",
        actions: &["copy local README=2", "delete local readme=1"],
        conflicts: &[],
    },
];

#[test]
fn scenario_table() {
    for row in ROWS {
        check(row);
    }
}

/// A side that lists no folders (an object store's keys imply them) holds
/// `d/x` without `d`. `d/x` is quiet, the same everywhere; the folder the
/// remote does not list must not be deleted locally around it, but made
/// on the remote.
#[test]
fn a_folder_with_quiet_contents_survives_on_a_side_that_lists_no_folders() {
    for policy in ALL {
        let mut remote = parse("d/x=1", side_entry);
        remote.remove(&RelPath::new("d").unwrap());
        let world = World::new(
            parse("d/x=1", |entry, _| BaseEntry::new(entry)),
            parse("d/x=1", side_entry),
            remote,
            *policy,
        );
        let plan = world.reconcile();
        let actions: Vec<String> = plan.actions.iter().map(describe_action).collect();
        assert_eq!(actions, ["mkdir remote d"], "under {policy:?}");
        assert!(plan.conflicts.is_empty(), "under {policy:?}");
    }
}

/// Runs one row under each of its policies.
fn check(row: &Row) {
    for policy in row.policies {
        let world = World::new(
            parse(row.base, |entry, id| BaseEntry {
                entry,
                local_id: id.clone(),
                remote_id: id,
                remote_version: None,
            }),
            parse(row.local, side_entry),
            parse(row.remote, side_entry),
            *policy,
        );
        let plan = world.reconcile();
        let actions: Vec<String> = plan.actions.iter().map(describe_action).collect();
        let conflicts: Vec<String> = plan.conflicts.iter().map(describe_conflict).collect();
        assert_eq!(
            (actions, conflicts),
            (strings(row.actions), strings(row.conflicts)),
            "scenario {:?} under {policy:?}",
            row.name
        );
        if let Err(why) = world.check_plan(&plan) {
            panic!("scenario {:?} under {policy:?}: {why}", row.name);
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn side_entry(entry: Entry, id: Option<FileId>) -> SideEntry {
    SideEntry {
        entry,
        id,
        version: None,
    }
}

/// Reads the tree notation described at the top of this file.
fn parse<V>(text: &str, make: impl Fn(Entry, Option<FileId>) -> V) -> BTreeMap<RelPath, V> {
    let mut tree = BTreeMap::new();
    for token in text.split_whitespace() {
        let (spec, id) = match token.split_once('#') {
            Some((spec, id)) => (spec, Some(FileId::new(id))),
            None => (token, None),
        };
        let (spec, mode) = match spec.split_once('@') {
            Some((spec, mode)) => (spec, Some(parse_mode(mode))),
            None => (spec, None),
        };
        let (path, entry) = match (spec.strip_suffix('/'), spec.split_once('=')) {
            (Some(dir), _) => (dir, Entry::dir(None)),
            (None, Some((path, n))) => (path, file(n.parse().expect("a version number"))),
            (None, None) => panic!("{token:?} is neither `path/` nor `path=N`"),
        };
        let path = RelPath::new(path).expect("a valid fixture path");
        for ancestor in path.ancestors() {
            tree.entry(ancestor)
                .or_insert_with(|| make(Entry::dir(None), None));
        }
        tree.insert(path, make(entry.with_mode(mode), id));
    }
    tree
}

fn parse_mode(octal: &str) -> Mode {
    Mode::from_bits(u32::from_str_radix(octal, 8).expect("an octal mode"))
}

/// ` @600` for a mode, nothing without one.
fn at(mode: Option<Mode>) -> String {
    mode.map_or_else(String::new, |m| format!("@{m}"))
}

fn describe_action(action: &Action) -> String {
    match action {
        Action::Move { side, from, to } => format!("move {side} {from} -> {to}"),
        Action::Mkdir { side, path, mode } => format!("mkdir {side} {path}{}", at(*mode)),
        Action::Copy {
            to,
            path,
            source,
            replaces,
            mode,
        } => {
            let over = replaces.map_or_else(String::new, |e| format!(" over {}", version(&e)));
            format!(
                "copy {to} {path}={}{}{over}",
                version(&Entry::File(*source)),
                at(*mode)
            )
        }
        Action::SetMode {
            side,
            path,
            expected,
            mode,
        } => format!(
            "chmod {side} {path}{} -> {mode}",
            at(expected.mode()).replace('@', " ")
        ),
        Action::Delete {
            side,
            path,
            expected,
        } => format!("delete {side} {}", describe_entry(path, expected)),
        Action::SetBase { path, entry } => match entry {
            Some(entry) => format!("base {}", describe_entry(path, entry)),
            None => format!("base {path} none"),
        },
    }
}

fn describe_entry(path: &RelPath, entry: &Entry) -> String {
    match entry {
        Entry::Dir(_) => format!("{path}/{}", at(entry.mode())),
        Entry::File(_) => format!("{path}={}{}", version(entry), at(entry.mode())),
    }
}

fn describe_conflict(conflict: &Conflict) -> String {
    let show = |e: &Option<Entry>| e.as_ref().map_or_else(|| "-".to_owned(), version);
    let keeps = conflict
        .other_path
        .as_ref()
        .map_or_else(String::new, |p| format!(" keeps {p}"));
    format!(
        "{} {}: {} {} {}{keeps}",
        conflict.kind.as_str(),
        conflict.path,
        show(&conflict.base),
        show(&conflict.local),
        show(&conflict.remote)
    )
}

/// What one path can hold in the combination table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Absent,
    Dir,
    File(u8),
}

/// What a plan does about a single path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Nothing,
    BaseOnly,
    TakeRemote,
    TakeLocal,
    Conflict(ConflictKind),
}

/// Every base × local × remote combination of one path, each absent, a
/// folder, or one of three file versions: the expected outcome follows from
/// the rules stated in plain terms, and the plan must do exactly that.
#[test]
fn every_combination_for_one_path() {
    let cells = [
        Cell::Absent,
        Cell::Dir,
        Cell::File(1),
        Cell::File(2),
        Cell::File(3),
    ];
    let mut seen = 0;
    for base in cells {
        for local in cells {
            for remote in cells {
                check_combination(base, local, remote);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 125);
}

fn expected_outcome(base: Cell, local: Cell, remote: Cell) -> Outcome {
    let cells = [base, local, remote];
    let involves_dir = cells.contains(&Cell::Dir);
    let involves_file = cells.iter().any(|c| matches!(c, Cell::File(_)));
    if local == remote {
        return if base == local {
            Outcome::Nothing
        } else {
            Outcome::BaseOnly
        };
    }
    if base == local {
        return Outcome::TakeRemote;
    }
    if base == remote {
        return Outcome::TakeLocal;
    }
    Outcome::Conflict(if involves_dir && involves_file {
        ConflictKind::TypeChanged
    } else if base == Cell::Absent {
        ConflictKind::BothCreated
    } else if local == Cell::Absent {
        ConflictKind::LocalDeletedRemoteModified
    } else if remote == Cell::Absent {
        ConflictKind::LocalModifiedRemoteDeleted
    } else {
        ConflictKind::BothModified
    })
}

fn check_combination(base: Cell, local: Cell, remote: Cell) {
    let path = RelPath::new("p").expect("a valid path");
    let entry = |cell: Cell| match cell {
        Cell::Absent => None,
        Cell::Dir => Some(Entry::dir(None)),
        Cell::File(n) => Some(file(n)),
    };
    let tree = |cell: Cell| -> SideTree {
        entry(cell)
            .map(|e| (path.clone(), SideEntry::new(e)))
            .into_iter()
            .collect()
    };
    let base_tree: BaseTree = entry(base)
        .map(|e| (path.clone(), BaseEntry::new(e)))
        .into_iter()
        .collect();
    let world = World::new(base_tree, tree(local), tree(remote), SENSITIVE);
    let plan = world.reconcile();
    let context = format!("base {base:?}, local {local:?}, remote {remote:?}: {plan:?}");

    let sides: Vec<Option<Side>> = plan
        .actions
        .iter()
        .map(|action| match action {
            Action::Move { side, .. }
            | Action::Mkdir { side, .. }
            | Action::Delete { side, .. }
            | Action::SetMode { side, .. } => Some(*side),
            Action::Copy { to, .. } => Some(*to),
            Action::SetBase { .. } => None,
        })
        .collect();
    let outcome = match (plan.conflicts.as_slice(), sides.as_slice()) {
        ([conflict], []) => Outcome::Conflict(conflict.kind),
        ([], []) => Outcome::Nothing,
        ([], [None]) => Outcome::BaseOnly,
        ([], all) if all.iter().all(|s| *s == Some(Side::Local)) => Outcome::TakeRemote,
        ([], all) if all.iter().all(|s| *s == Some(Side::Remote)) => Outcome::TakeLocal,
        _ => panic!("a mixed plan for one path; {context}"),
    };
    assert_eq!(outcome, expected_outcome(base, local, remote), "{context}");
    let after = world
        .check_plan(&plan)
        .unwrap_or_else(|why| panic!("{why}; {context}"));
    let held = |tree: &SideTree| tree.get(&path).map(|e| e.entry);
    let expected_after = match outcome {
        Outcome::TakeRemote => entry(remote),
        Outcome::TakeLocal => entry(local),
        Outcome::Nothing | Outcome::BaseOnly => entry(local),
        Outcome::Conflict(_) => return,
    };
    assert!(
        same(held(&after.local).as_ref(), expected_after.as_ref()),
        "{context}"
    );
}
