//! `railyard serve` on the PostgreSQL journal (`[journal] kind = "postgres"`): a throwaway
//! cluster (`scripts/pg-cluster`), the embedded default's rails, demo payments settled, and a
//! second start resuming from the database (the batch recognised, nothing paid twice), with no
//! redb file written and the records' hash chain verified in PostgreSQL. A missing URL
//! variable is a configuration error naming the key.

use journal_pg::PgJournal;
use journal_pg::cluster::Cluster;

use super::railyard;

fn with_postgres(data: &std::path::Path) -> std::path::PathBuf {
    let config = format!(
        "{}\n[journal]\nkind = \"postgres\"\nurl_env = \"TEST_PG_URL\"\n",
        include_str!("../../../../config/default.toml")
    );
    let path = data.join("railyard.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn serve_runs_on_postgres_and_resumes_from_it() {
    let cluster = Cluster::start();
    let data = tempfile::tempdir().unwrap();
    let config = with_postgres(data.path());
    let run = || {
        railyard(data.path())
            .env("TEST_PG_URL", &cluster.url)
            .arg("--config")
            .arg(&config)
            .args(["serve", "--demo-payments", "200", "--exit-when-settled"])
            .output()
            .unwrap()
    };
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("accepted 200 demo payments"), "{stdout}");
    assert!(stdout.contains(r#"{"settled": 200}"#), "{stdout}");
    assert!(stdout.contains("journal Postgres(127.0.0.1:"), "{stdout}");
    assert!(!data.path().join("journal.redb").exists(), "no redb file: the journal is PostgreSQL");
    let journal = PgJournal::connect(&cluster.url).unwrap();
    let records = journal.verify().unwrap();
    // The batch and every payment's end are in PostgreSQL.
    let events: Vec<model::Event> =
        journal.read_range(1, 10_000).unwrap().iter().map(|r| model::Event::decode(&r.payload).unwrap()).collect();
    let notices: usize = events
        .iter()
        .map(|e| match e {
            model::Event::Notifications { notices, .. } => notices.len(),
            _ => 0,
        })
        .sum();
    assert!(events.iter().any(|e| matches!(e, model::Event::BatchAccepted { count: 200, .. })), "{records} records");
    assert_eq!(notices, 200, "a notice per settled payment, in {records} records");

    let again = run();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}{}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout.contains("demo batch already accepted (200 payments)"), "{stdout}");
    assert!(stdout.contains(r#"{"settled": 200}"#), "{stdout}");
    assert!(PgJournal::connect(&cluster.url).unwrap().verify().unwrap() >= records);

    let missing =
        railyard(data.path()).env_remove("TEST_PG_URL").arg("--config").arg(&config).arg("serve").output().unwrap();
    assert_eq!(missing.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("config journal.url_env") && stderr.contains("TEST_PG_URL"), "{stderr}");
}
