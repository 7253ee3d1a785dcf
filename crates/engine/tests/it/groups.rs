//! Merchants' batches admitted as one group (`Engine::submit_many`, what the command loop does
//! with the batches waiting together): each batch gets the answer it would get submitted alone
//! after the ones before it (the group's own claims and references count while they are still
//! in flight to the journal), the state is the same as one by one, and a failed commit
//! accepts none of them.

use engine::*;
use model::*;

use super::{T0, World, config, drafts, fund, run_until_done};

/// The group: accepted, accepted, the first again (same body, other body), a reference the
/// first batch took, an empty batch, accepted.
fn group() -> Vec<(MerchantId, String, Vec<Draft>)> {
    let mut reused = drafts(2_000, 10);
    reused[3].reference = "inv-7".into(); // merchant 1's first batch has it
    vec![
        (MerchantId(1), "k1".into(), drafts(0, 500)),
        (MerchantId(2), "k2".into(), drafts(500, 500)),
        (MerchantId(1), "k1".into(), drafts(0, 500)),
        (MerchantId(1), "k1".into(), drafts(0, 499)),
        (MerchantId(1), "k5".into(), reused),
        (MerchantId(2), "k6".into(), Vec::new()),
        (MerchantId(3), "k7".into(), drafts(1_000, 500)),
    ]
}

fn submissions(group: &[(MerchantId, String, Vec<Draft>)]) -> Vec<Submission<'_>> {
    group.iter().map(|(merchant, key, drafts)| Submission { merchant: *merchant, key, drafts }).collect()
}

/// A funded engine on a fresh journal in `dir`, and the journal's path.
async fn funded(world: &World, dir: &tempfile::TempDir) -> (std::path::PathBuf, Engine) {
    let path = dir.path().join("journal.redb");
    let mut engine = super::open_engine(&path, config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    (path, engine)
}

/// The answers in a comparable form.
fn shape(answers: &[Result<Intake, IntakeError>]) -> Vec<String> {
    answers
        .iter()
        .map(|answer| match answer {
            Ok(intake) => format!("{intake:?}"),
            Err(IntakeError::Invalid(rows)) => {
                rows.iter().map(|r| format!("row {} {} {}", r.row, r.field, r.code)).collect::<Vec<_>>().join(";")
            }
            Err(other) => other.to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_judged_as_one_by_one_and_settles_exactly_once() {
    let (world, world_alone) = (World::new(), World::new());
    let group = group();

    let dir = tempfile::tempdir().unwrap();
    let mut alone =
        super::open_engine(&dir.path().join("alone.redb"), config(), world_alone.rails(), T0).await.unwrap();
    fund(&mut alone, T0).await;
    let mut one_by_one = Vec::new();
    for (merchant, key, drafts) in &group {
        one_by_one.push(alone.submit(*merchant, key, drafts, T0).await);
    }

    let mut engine = super::open_engine(&dir.path().join("group.redb"), config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let tip = engine.journal().tip();
    let answers = engine.submit_many(&submissions(&group), T0).await;

    assert_eq!(shape(&answers), shape(&one_by_one), "each batch is answered as if submitted alone, in order");
    assert!(matches!(answers[0], Ok(Intake::Accepted { .. })));
    assert!(matches!(answers[1], Ok(Intake::Accepted { .. })));
    let (Ok(Intake::Accepted { batch, payments }), Ok(Intake::Duplicate { batch: again, payments: same })) =
        (&answers[0], &answers[2])
    else {
        panic!("the same key and body in one group is a duplicate: {:?}", shape(&answers))
    };
    assert_eq!((batch, payments), (again, same));
    assert!(matches!(answers[3], Err(IntakeError::Conflict { batch: b }) if b == *batch));
    assert!(
        matches!(&answers[4], Err(IntakeError::Invalid(rows)) if rows.len() == 1 && rows[0].row == 3 && rows[0].field == "reference"),
        "a reference taken by a batch still in flight is taken: {:?}",
        shape(&answers)
    );
    assert!(matches!(answers[5], Err(IntakeError::BatchSize { count: 0, .. })));
    assert!(matches!(answers[6], Ok(Intake::Accepted { .. })));
    assert_eq!(engine.state().state_hash(), alone.state().state_hash(), "the same state as one by one");
    assert_eq!(engine.journal().tip(), alone.journal().tip(), "the same records");
    assert!(engine.journal().tip() > tip);

    run_until_done(&mut engine, &world, T0, 1_000).await;
    super::check_paid_exactly_once(&engine, &world, 1_500);
    run_until_done(&mut alone, &world_alone, T0, 1_000).await;
    assert_eq!(engine.state().state_hash(), alone.state().state_hash(), "and the same state when all is settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_accepts_no_batch_of_the_group() {
    let (world, dir) = (World::new(), tempfile::tempdir().unwrap());
    let (path, mut engine) = funded(&world, &dir).await;
    let tip = engine.journal().tip();
    let group = group();
    engine.journal().fail_after(0);
    let answers = engine.submit_many(&submissions(&group), T0).await;
    for (i, answer) in answers.iter().enumerate() {
        // Refused ones keep their own answer; none is accepted, and the ones that were on
        // their way to the journal are told the engine stopped.
        assert!(!matches!(answer, Ok(Intake::Accepted { .. })), "batch {i}: {:?}", shape(&answers));
    }
    assert!(matches!(answers[0], Err(IntakeError::Engine(EngineError::Stopped(_)))), "{:?}", shape(&answers));
    assert!(engine.stopped().is_some());
    drop(engine);

    let mut engine = super::open_engine(&path, config(), world.rails(), T0).await.unwrap();
    assert_eq!(engine.journal().tip(), tip, "nothing of the group was journaled");
    let answers = engine.submit_many(&submissions(&group), T0).await;
    assert!(matches!(answers[0], Ok(Intake::Accepted { .. })), "sent again, accepted: {:?}", shape(&answers));
}

/// The commit fails after the first, however the writer grouped the batches: a batch is
/// answered accepted only if it is durable, and after a restart each batch sent again is either
/// recognised (it was journaled before the failure) or accepted now: none is lost, none is
/// there twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_part_of_the_group_was_journaled_loses_no_batch() {
    let (world, dir) = (World::new(), tempfile::tempdir().unwrap());
    let (path, mut engine) = funded(&world, &dir).await;
    let group: Vec<(MerchantId, String, Vec<Draft>)> =
        (0..6u64).map(|b| (MerchantId(b % 3 + 1), format!("k{b}"), drafts(b * 100, 100))).collect();
    engine.journal().fail_after(1);
    let answers = engine.submit_many(&submissions(&group), T0).await;
    for answer in &answers {
        // All in the writer's first commit, or some in a commit that failed: then none is
        // answered accepted.
        assert!(
            matches!(answer, Ok(Intake::Accepted { .. }) | Err(IntakeError::Engine(EngineError::Stopped(_)))),
            "{:?}",
            shape(&answers)
        );
    }
    let stopped = engine.stopped().is_some();
    assert_eq!(stopped, answers.iter().any(Result::is_err), "{:?}", shape(&answers));
    drop(engine);

    let mut engine = super::open_engine(&path, config(), world.rails(), T0).await.unwrap();
    let again = engine.submit_many(&submissions(&group), T0).await;
    for (before, after) in answers.iter().zip(&again) {
        match (before, after) {
            (Ok(Intake::Accepted { .. }), Ok(Intake::Duplicate { .. })) | (Err(_), Ok(_)) => {}
            other => panic!("an accepted batch is recognised, another is recognised or accepted now: {other:?}"),
        }
    }
    assert!(again.iter().any(|a| matches!(a, Ok(Intake::Duplicate { .. }))), "the first commit went through");
    run_until_done(&mut engine, &world, T0, 1_000).await;
    super::check_paid_exactly_once(&engine, &world, 600);
}

/// The journal's records from the start, as bytes.
fn records(engine: &Engine) -> Vec<Vec<u8>> {
    engine.journal().read_range(1, usize::MAX).unwrap().into_iter().map(|r| r.payload).collect()
}

/// `tick_admitting` (what the command loop runs when a round is due and batches are waiting)
/// journals exactly what `submit_many` and then `tick` journal, answers the same, and settles
/// every payment once: the only difference is that the round decides while the writer makes
/// the batches durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_with_batches_admitted_in_it_is_submit_many_then_tick() {
    let (world, world_apart) = (World::new(), World::new());
    let dir = tempfile::tempdir().unwrap();
    let (_, mut engine) = funded(&world, &dir).await;
    let mut apart =
        super::open_engine(&dir.path().join("apart.redb"), config(), world_apart.rails(), T0).await.unwrap();
    fund(&mut apart, T0).await;
    // The mixed group first (duplicates, a conflict, a taken reference, an empty batch), then
    // fresh batches while earlier ones are being routed, settled and watched.
    let mut groups = vec![group()];
    for tick in 0..6u64 {
        let start = |b: u64| 1_500 + (tick * 3 + b) * 300;
        groups.push((0..3u64).map(|b| (MerchantId(b + 1), format!("t{tick}-{b}"), drafts(start(b), 300))).collect());
    }
    let mut now = T0;
    for group in &groups {
        now = now.saturating_add_ms(super::BLOCK_MS);
        world.advance(now);
        world_apart.advance(now);
        let (answers, round) = engine.tick_admitting(&submissions(group), now).await;
        round.unwrap();
        let answers_apart = apart.submit_many(&submissions(group), now).await;
        apart.tick(now).await.unwrap();
        assert_eq!(shape(&answers), shape(&answers_apart), "the same answers");
        assert_eq!(engine.state().state_hash(), apart.state().state_hash(), "the same state after each round");
        engine.check_staging().unwrap();
    }
    run_until_done(&mut engine, &world, now, 1_000).await;
    run_until_done(&mut apart, &world_apart, now, 1_000).await;
    assert_eq!(records(&engine), records(&apart), "the same records, byte for byte");
    super::check_paid_exactly_once(&engine, &world, 1_500 + 6 * 3 * 300);
}

/// The journal fails on the commit that carries the batches: no batch is answered accepted,
/// the round's transactions (built while the batches were being written) are never broadcast,
/// and the engine stops. Reopened, nothing of it was journaled; sent again, the batches are
/// accepted and settled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_in_a_round_with_batches_broadcasts_nothing() {
    let (world, dir) = (World::new(), tempfile::tempdir().unwrap());
    let (path, mut engine) = funded(&world, &dir).await;
    let group: Vec<(MerchantId, String, Vec<Draft>)> =
        (0..3u64).map(|b| (MerchantId(b + 1), format!("k{b}"), drafts(b * 200, 200))).collect();
    // Queued before the failure, so the failing round has work to route and broadcast.
    let queued = engine.submit_many(&submissions(&group[..1]), T0).await;
    assert!(matches!(queued[0], Ok(Intake::Accepted { .. })));
    let tip = engine.journal().tip();
    engine.journal().fail_after(0);
    let now = T0.saturating_add_ms(super::BLOCK_MS);
    world.advance(now);
    let (answers, round) = engine.tick_admitting(&submissions(&group[1..]), now).await;
    assert!(matches!(round, Err(EngineError::Stopped(_))), "{round:?}");
    for answer in &answers {
        assert!(matches!(answer, Err(IntakeError::Engine(EngineError::Stopped(_)))), "{:?}", shape(&answers));
    }
    assert!(world.sandboxes.iter().all(|s| s.bodies_kept() == 0), "nothing reached a chain");
    let (later, round) = engine.tick_admitting(&submissions(&group[1..]), now).await;
    assert!(matches!(round, Err(EngineError::Stopped(_))));
    assert!(later.iter().all(|a| matches!(a, Err(IntakeError::Engine(EngineError::Stopped(_))))));
    drop(engine);

    let mut engine = super::open_engine(&path, config(), world.rails(), T0).await.unwrap();
    assert_eq!(engine.journal().tip(), tip, "nothing of the failed round was journaled");
    let (again, round) = engine.tick_admitting(&submissions(&group), now).await;
    round.unwrap();
    assert!(matches!(again[0], Ok(Intake::Duplicate { .. })), "{:?}", shape(&again));
    assert!(again[1..].iter().all(|a| matches!(a, Ok(Intake::Accepted { .. }))), "{:?}", shape(&again));
    run_until_done(&mut engine, &world, now, 1_000).await;
    super::check_paid_exactly_once(&engine, &world, 600);
}
