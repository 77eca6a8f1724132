//! The simulator: the core state machine driven against an in-memory cluster,
//! a virtual clock and a scripted world. The same core and the same policies
//! as the operator; only the shell differs.
pub mod gateway;
pub mod load;
pub mod output;
pub mod plot;
pub mod scenario;
pub mod series;
pub mod world;

use crate::core::rollout::Severity;
use crate::core::{self, Action, Judge, Outcome, Rollout, Status};
use fledge_policy::{MetricValue, Phase, WebhookKind};
pub use load::{load, Inputs, LoadError};
use scenario::Scenario;
use world::World;

/// Virtual time at which a simulation starts unless its scenario says
/// otherwise (`start`): 2026-01-01T00:00:00Z.
pub const START: i64 = 1_767_225_600;
/// Steps allowed for bootstrap before the trigger is applied.
const BOOTSTRAP_STEPS: u32 = 100;

/// One line of output: an event (and its log line) with the state after its step.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub ts: i64,
    /// The log line (`msg`).
    pub msg: String,
    /// The Kubernetes Event note.
    pub event: String,
    pub warning: bool,
    pub phase: Phase,
    pub canary_weight: u32,
    pub failed_checks: u32,
    pub iteration: u32,
    /// Emitted while bootstrapping, before the trigger.
    pub bootstrap: bool,
}

/// A notification that would have gone to an alert provider.
#[derive(Debug, Clone, PartialEq)]
pub struct SentAlert {
    pub ts: i64,
    /// The AlertProvider's name.
    pub provider: String,
    pub severity: Severity,
    pub message: String,
    /// Index of the record it precedes in `Report::records`.
    pub after: usize,
    /// Sent while bootstrapping, before the trigger.
    pub bootstrap: bool,
}

/// The state of the world at the end of one step, for plots.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ts: i64,
    pub canary_weight: u32,
    /// Metrics read during the step: name and value.
    pub metrics: Vec<(String, f64)>,
}

/// The result of a whole simulation.
#[derive(Debug, Clone)]
pub struct Report {
    pub canary: String,
    pub records: Vec<Record>,
    pub alerts: Vec<SentAlert>,
    pub samples: Vec<Sample>,
    pub phase: Phase,
    /// Steps run after the trigger.
    pub steps: u32,
    /// Whether the run reached Succeeded or Failed within the step bound.
    pub finished: bool,
}

/// One simulated canary in flight.
pub struct Sim {
    rollout: Rollout,
    world: World,
    status: Status,
    now: i64,
    scenario: Scenario,
    triggered: bool,
    steps: u32,
    bootstrap_steps: u32,
    pub report: Report,
}

impl Sim {
    pub fn new(inputs: &Inputs, scenario: Scenario) -> Sim {
        let mut world = World::new(
            inputs.target.clone(),
            inputs.hpa_min_replicas,
            inputs.configs.clone(),
            scenario.clone(),
        );
        world.gateway = gateway::HttpRouteModel::for_canary(&inputs.canary, &inputs.rollout);
        Sim {
            rollout: inputs.rollout.clone(),
            world,
            status: Status::default(),
            // `scenario::parse` refused a bad start.
            now: scenario.start_time().unwrap_or(START),
            scenario,
            triggered: false,
            steps: 0,
            bootstrap_steps: 0,
            report: Report {
                canary: inputs.rollout.id(),
                records: Vec::new(),
                alerts: Vec::new(),
                samples: Vec::new(),
                phase: Phase::Initializing,
                steps: 0,
                finished: false,
            },
        }
    }

    fn max_steps(&self) -> u32 {
        self.scenario.max_steps.unwrap_or(1000)
    }

    /// Whether the run has ended (finished or out of steps).
    pub fn ended(&self) -> bool {
        self.report.finished
            || self.steps >= self.max_steps()
            || self.bootstrap_steps >= BOOTSTRAP_STEPS
    }

    /// Runs one step of the core; returns false once the run has ended.
    pub fn step(&mut self, judge: &dyn Judge) -> bool {
        if self.ended() {
            return false;
        }
        if !self.triggered && self.status.phase == Phase::Initialized {
            let trigger = self.scenario.trigger.clone();
            self.world.change_target(&trigger);
            self.triggered = true;
        }
        if self.triggered {
            let due: Vec<_> = self
                .scenario
                .updates
                .iter()
                .filter(|u| u.after_step == self.steps)
                .map(|u| u.change.clone())
                .collect();
            for change in &due {
                self.world.change_target(change);
            }
        }
        let mut obs = self.world.observe(&self.rollout, self.now);
        let tick = loop {
            match core::step(&self.rollout, &self.status, &obs, judge) {
                Outcome::Need(request) => self.world.answer(&self.rollout, &request, &mut obs),
                Outcome::Done(tick) => break tick,
            }
        };
        for action in &tick.actions {
            self.world.execute(&self.rollout, action, self.now);
        }
        self.report_actions(&tick.actions, &tick.status);
        // Post-rollout hooks see the outcome carried out and the status written.
        if let Some(post) = &tick.post_rollout {
            let results = self
                .world
                .call_webhooks(&self.rollout, WebhookKind::PostRollout);
            let mut after: Vec<Action> = core::post_rollout_events(&results)
                .into_iter()
                .map(Action::Event)
                .collect();
            after.extend(post.then.iter().cloned());
            for action in &after {
                self.world.execute(&self.rollout, action, self.now);
            }
            self.report_actions(&after, &tick.status);
        }
        self.report.samples.push(Sample {
            ts: self.now,
            canary_weight: self.world.routes.canary_weight,
            metrics: obs
                .metrics
                .iter()
                .flatten()
                .filter_map(|m| match m.value {
                    MetricValue::Value(v) => Some((m.name.clone(), v)),
                    MetricValue::Error(_) => None,
                })
                .collect(),
        });
        self.status = tick.status;
        self.report.phase = self.status.phase;
        self.now += tick.requeue.as_secs().max(1) as i64;
        if self.triggered {
            self.steps += 1;
            self.report.steps = self.steps;
            let pending = self
                .scenario
                .updates
                .iter()
                .any(|u| u.after_step >= self.steps);
            let terminal = matches!(self.status.phase, Phase::Succeeded | Phase::Failed);
            if terminal && !pending {
                self.report.finished = true;
            }
        } else {
            self.bootstrap_steps += 1;
            // Initialization failed: there is nothing to trigger.
            if self.status.phase == Phase::Failed {
                self.report.finished = true;
            }
        }
        !self.ended()
    }
}

impl Sim {
    /// Records the events and sent alerts of `actions`, with the state after the step.
    fn report_actions(&mut self, actions: &[Action], status: &Status) {
        let bootstrap = !self.triggered;
        for action in actions {
            if let Action::Alert(alert) = action {
                // Each of the Canary's alerts whose severity the alert reaches.
                for spec in self
                    .rollout
                    .alerts
                    .iter()
                    .filter(|s| alert.severity >= s.severity)
                {
                    if alert.muted {
                        continue;
                    }
                    self.report.alerts.push(SentAlert {
                        ts: self.now,
                        provider: spec.provider.clone(),
                        severity: alert.severity,
                        message: alert.message.clone(),
                        after: self.report.records.len(),
                        bootstrap,
                    });
                }
            }
            if let Action::Event(e) = action {
                self.report.records.push(Record {
                    ts: self.now,
                    msg: e.log_message().to_string(),
                    event: e.message.clone(),
                    warning: e.warning,
                    phase: status.phase,
                    canary_weight: status.canary_weight,
                    failed_checks: status.failed_checks,
                    iteration: status.iterations,
                    bootstrap,
                });
            }
        }
    }
}

/// Simulates one canary to its end.
pub fn run(inputs: &Inputs, scenario: Scenario, judge: &dyn Judge) -> Report {
    let mut sim = Sim::new(inputs, scenario);
    while sim.step(judge) {}
    sim.report
}

/// How one of many simulated canaries ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub canary: String,
    pub phase: Phase,
    /// Steps run after the trigger.
    pub steps: u32,
    pub finished: bool,
}

impl Summary {
    fn of(report: &Report) -> Summary {
        Summary {
            canary: report.canary.clone(),
            phase: report.phase,
            steps: report.steps,
            finished: report.finished,
        }
    }
}

/// Simulates `copies` independent canaries at once, step by step in lockstep,
/// sharing one policy. Only a summary of each is kept: a step's records are
/// dropped once taken, and a canary that has ended is dropped whole, so memory
/// stays that of the canaries in flight whatever the number of records.
pub fn run_many(
    inputs: &Inputs,
    scenario: &Scenario,
    copies: usize,
    judge: &dyn Judge,
) -> Vec<Summary> {
    let mut summaries: Vec<Option<Summary>> = vec![None; copies];
    let mut sims: Vec<(usize, Sim)> = (0..copies)
        .map(|i| {
            let mut inputs = inputs.clone();
            inputs.rollout.name = format!("{}-{i:04}", inputs.rollout.name);
            (i, Sim::new(&inputs, scenario.clone()))
        })
        .collect();
    while !sims.is_empty() {
        sims.retain_mut(|(i, sim)| {
            let going = sim.step(judge);
            sim.report.records.clear();
            sim.report.alerts.clear();
            sim.report.samples.clear();
            if !going {
                summaries[*i] = Some(Summary::of(&sim.report));
            }
            going
        });
    }
    summaries.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests;
