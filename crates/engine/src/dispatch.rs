//! The command loop's dispatch: each `Command` to the engine method that does it, and a run
//! of merchants' batches waiting together admitted as one group.

use tokio::sync::mpsc;

use crate::Engine;
use crate::intake::Submission;
use crate::service::{Command, GuardAction};
use model::Timestamp;

/// Most merchants' batches admitted as one group.
pub(crate) const GROUP_MAX: usize = 64;

/// The commands to handle now: `first`, and when it is a merchant's batch, the batches
/// already waiting behind it (up to `GROUP_MAX`), admitted as one group with one durable
/// commit. Any other command ends the run; it is handled right after, in order.
pub(crate) fn gather(first: Command, commands: &mut mpsc::Receiver<Command>) -> (Vec<Command>, Option<Command>) {
    let mut group = vec![first];
    if !matches!(group[0], Command::Submit { .. }) {
        return (group, None);
    }
    while group.len() < GROUP_MAX {
        match commands.try_recv() {
            Ok(command @ Command::Submit { .. }) => group.push(command),
            Ok(other) => return (group, Some(other)),
            Err(_) => break,
        }
    }
    (group, None)
}

impl Engine {
    /// Admits a group of merchants' batches (`Command::Submit` only) and answers each; with
    /// `round`, in a round run at `now` (`tick_admitting`).
    pub(crate) async fn admit_group(&mut self, group: Vec<Command>, now: Timestamp, round: bool) {
        let mut owned = Vec::with_capacity(group.len());
        for command in group {
            if let Command::Submit { merchant, key, drafts, reply } = command {
                owned.push((merchant, key, drafts, reply));
            }
        }
        let batches: Vec<Submission<'_>> =
            owned.iter().map(|(merchant, key, drafts, _)| Submission { merchant: *merchant, key, drafts }).collect();
        let answers = if round {
            let (answers, round) = self.tick_admitting(&batches, now).await;
            if let Err(error) = round {
                tracing::error!(%error, "round failed");
            }
            answers
        } else {
            self.submit_many(&batches, now).await
        };
        drop(batches);
        for ((_, _, _, reply), answer) in owned.into_iter().zip(answers) {
            // A receiver that went away no longer wants the answer: dropping it is right.
            let _ = reply.send(answer);
        }
    }

    pub(crate) async fn dispatch(&mut self, command: Command, now: Timestamp) {
        // A receiver that went away no longer wants the answer: dropping it is right.
        match command {
            Command::Submit { merchant, key, drafts, reply } => {
                let _ = reply.send(self.submit(merchant, &key, &drafts, now).await);
            }
            Command::FundPool { rail, asset, amount, transfer, reply } => {
                let _ = reply.send(self.fund_pool(rail, asset, amount, transfer, now).await);
            }
            Command::Pause { rail, operator, reason, reply } => {
                let _ = reply.send(self.pause(rail, &operator, &reason, now).await);
            }
            Command::Resume { rail, operator, reason, reply } => {
                let _ = reply.send(self.resume_rail(rail, &operator, &reason, now).await);
            }
            Command::Drain { rail, dry_run, operator, reason, reply } => {
                let _ = reply.send(self.drain(rail, dry_run, &operator, &reason, now).await);
            }
            Command::Resolve { payment, resolution, operator, reason, reply } => {
                let _ = reply.send(self.resolve(payment, resolution, &operator, &reason, now).await);
            }
            Command::Reconcile { reply } => {
                let _ = reply.send(self.reconcile(now).await);
            }
            Command::Acknowledge { ids, reply } => {
                let _ = reply.send(self.acknowledge(&ids, now).await);
            }
            Command::CreateKey { key, role, merchant, label, by, reply } => {
                let _ = reply.send(self.create_key(key, role, merchant, &label, &by, now).await);
            }
            Command::RevokeKey { key, by, reason, reply } => {
                let _ = reply.send(self.revoke_key(key, &by, &reason, now).await);
            }
            Command::SetWebhook { merchant, url, by, reply } => {
                let _ = reply.send(self.set_webhook(merchant, url, &by, now).await);
            }
            Command::Cancel { merchant, payment, by, reply } => {
                let _ = reply.send(self.cancel(merchant, payment, &by, now).await);
            }
            Command::SetPoolThresholds { config, by, reason, reply } => {
                let _ = reply.send(self.set_pool_thresholds(config, &by, &reason, now).await);
            }
            Command::SetClass { class, setting, by, reason, reply } => {
                let _ = reply.send(self.set_class(class, setting, &by, &reason, now).await);
            }
            Command::SetRules { rules, by, reason, reply } => {
                let _ = reply.send(self.set_rules(rules, &by, &reason, now).await);
            }
            Command::Outbox { after, limit, reply } => {
                let _ = reply.send(self.outbox_page(after, limit));
            }
            Command::Guard { action, by, role, reason, reply } => {
                let outcome = match action {
                    GuardAction::Set { merchant, policy } => self.set_guards(merchant, policy, &by, &reason, now).await,
                    GuardAction::Approve { payment } => self.approve(payment, &by, role, now).await,
                    GuardAction::Release { payment } => self.release_guard(payment, &by, role, &reason, now).await,
                    GuardAction::Reject { payment } => self.reject_guard(payment, &by, role, &reason, now).await,
                };
                let _ = reply.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{MerchantId, Name};
    use tokio::sync::oneshot;

    fn submit(key: &str) -> Command {
        let (reply, _) = oneshot::channel();
        Command::Submit { merchant: MerchantId(1), key: key.into(), drafts: Vec::new(), reply }
    }

    fn pause() -> Command {
        let (reply, _) = oneshot::channel();
        Command::Pause { rail: Name::new("base").unwrap(), operator: "op".into(), reason: "x".into(), reply }
    }

    fn key(command: &Command) -> &str {
        match command {
            Command::Submit { key, .. } => key,
            _ => "other",
        }
    }

    #[test]
    fn batches_waiting_together_are_one_group_and_another_command_ends_it() {
        let (sender, mut commands) = mpsc::channel(GROUP_MAX * 2);
        for command in [submit("b"), submit("c"), pause(), submit("d")] {
            sender.try_send(command).unwrap();
        }
        let (group, next) = gather(submit("a"), &mut commands);
        assert_eq!(group.iter().map(key).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(next.as_ref().map(key), Some("other"), "the command that ended the run comes right after it");
        let (group, next) = gather(commands.try_recv().unwrap(), &mut commands);
        assert_eq!((group.iter().map(key).collect::<Vec<_>>(), next.is_none()), (vec!["d"], true));
        // Anything but a batch is handled alone.
        sender.try_send(submit("e")).unwrap();
        let (group, next) = gather(pause(), &mut commands);
        assert_eq!((group.len(), next.is_none()), (1, true));
        // A group is bounded.
        for i in 0..GROUP_MAX + 5 {
            sender.try_send(submit(&i.to_string())).unwrap();
        }
        let (group, _) = gather(commands.try_recv().unwrap(), &mut commands);
        assert_eq!(group.len(), GROUP_MAX);
    }
}
