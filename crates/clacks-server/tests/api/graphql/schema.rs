//! The served schema: the checked-in `schema.graphql` snapshot and
//! compatibility with the original v0 schema.

use std::path::PathBuf;

const ORIGINAL: &str = include_str!("original_v0.graphql");

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema.graphql")
}

#[test]
fn schema_file_matches_served_schema() {
    let served = clacks_graphql::sdl();
    let path = snapshot_path();
    if std::env::var("CLACKS_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &served).unwrap();
        return;
    }
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        file == served,
        "schema.graphql differs from the served schema; run \
         `CLACKS_UPDATE_SNAPSHOTS=1 cargo test -p clacks-server --test api schema_file` and commit it"
    );
}

#[test]
fn original_schema_still_works() {
    let served = clacks_graphql::sdl();
    let problems =
        clacks_graphql::compat::incompatibilities(ORIGINAL, &served, &["Channel.messages"])
            .unwrap();
    assert!(
        problems.is_empty(),
        "breaks the original schema: {problems:#?}"
    );
    // The documented fix: `messages` returns a list of the original type.
    assert!(served.contains("messages(last: ID, count: Int): [Message!]!"));
}

#[test]
fn compatibility_check_catches_a_missing_field() {
    let served = clacks_graphql::sdl().replace("sent_at:", "sentAtRenamed:");
    let problems =
        clacks_graphql::compat::incompatibilities(ORIGINAL, &served, &["Channel.messages"])
            .unwrap();
    assert!(
        problems.iter().any(|p| p.contains("Message.sent_at")),
        "{problems:?}"
    );
}
