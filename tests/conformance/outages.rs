//! Outages: a server lost in the middle of a listing, or away from the
//! start, makes the remote offline as a whole (never a listing that reads
//! as deletions, nor a failure of each path); a root that is gone or
//! empty where it was full is told apart from a root with nothing in it.

use prism_sync::model::Scope;
use prism_sync::remote::RootState;

use crate::link::Link;
use crate::{Case, base_of, create, list, no_rules, paths};

conformance!(a_root_gone_or_emptied_is_not_a_root_whose_files_were_deleted);
conformance!(network: a_connection_lost_mid_listing_makes_the_remote_offline);

fn a_root_gone_or_emptied_is_not_a_root_whose_files_were_deleted(case: &Case) {
    let replica = case.replica();
    assert_eq!(replica.root_state().unwrap(), RootState::Missing);
    replica.mark_root().unwrap();
    assert_eq!(replica.root_state().unwrap(), RootState::Ready);
    replica.mark_root().unwrap();
    assert!(paths(&list(&*replica)).is_empty(), "a marked root, empty");
    replica
        .mkdir(&prism_sync::model::RelPath::new("d").unwrap(), None)
        .unwrap();
    create(&*replica, "d/a.txt", "a");
    let full = list(&*replica);
    assert_eq!(paths(&full), ["d", "d/a.txt"]);
    let base = base_of(&full);

    // An unmounted disk: the mount point is there, empty.
    case.outside().empty_root();
    assert_eq!(replica.root_state().unwrap(), RootState::Unmarked);
    // Removed altogether.
    case.outside().remove_root();
    assert_eq!(replica.root_state().unwrap(), RootState::Missing);
    // A listing of a root that is not there is not an empty listing.
    let listing = replica.list(&Scope::Full, &base, &no_rules());
    assert!(listing.is_err(), "{listing:?}");
    // A new agent sees the same.
    assert_eq!(case.replica().root_state().unwrap(), RootState::Missing);
}

fn a_connection_lost_mid_listing_makes_the_remote_offline(case: &Case) {
    let outside = case.outside();
    case.marked();
    for folder in 0..20 {
        for file in 0..10 {
            outside.put(
                format!("folder-{folder:02}/file-{file:02}.txt"),
                format!("{folder} {file}"),
            );
        }
    }
    let port = case.backend.server_port().expect("a server");
    // Apache gives a file changed within the last second a weak ETag,
    // and a listing reads such a file to hash it: a listing measured in
    // that second sends more bytes than the one cut a moment later, whose
    // cut at 90 % would then fall after its end.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let first = list(&*case.replica());
    assert_eq!(first.tree.len(), 220);
    let base = base_of(&first);
    let list_with_base =
        |replica: &dyn prism_sync::remote::Replica| replica.list(&Scope::Full, &base, &no_rules());

    // Cut early, half-way and late into a listing (measured on a listing
    // over connections already open, as the one cut will be).
    for part in [0.05, 0.5, 0.9] {
        let link = Link::to(port);
        let replica = case.backend.replica_via(case.folder, link.port());
        list_with_base(&*replica).unwrap();
        let before = link.bytes_from_server();
        assert_eq!(list_with_base(&*replica).unwrap().tree.len(), 220);
        let listing_bytes = link.bytes_from_server() - before;
        link.cut_after((listing_bytes as f64 * part) as i64);
        let broken = list_with_base(&*replica);
        assert!(
            link.is_cut(),
            "the link was cut during the listing ({part} of {listing_bytes} bytes)"
        );
        match broken {
            Ok(listing) => panic!(
                "a listing cut at {part} of its bytes read as {} entries",
                listing.tree.len()
            ),
            Err(e) => assert!(e.is_offline(), "cut at {part} of the listing: {e:?}"),
        }
        // The server stays away: offline, not a missing root.
        let state = replica.root_state().expect_err("no root state");
        assert!(state.is_offline(), "{state:?}");
    }

    // A server away from the start: offline too.
    let link = Link::to(port);
    link.cut_after(0);
    let away = case.backend.replica_via(case.folder, link.port());
    let state = away
        .root_state()
        .expect_err("no root state of a server away");
    assert!(state.is_offline(), "{state:?}");
    let listing = list_with_base(&*away).err().unwrap();
    assert!(listing.is_offline(), "{listing:?}");
}
