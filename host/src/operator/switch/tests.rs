use super::*;
use crate::api::{self, Issue};
use crate::core::Routes;
use crate::operator::router::Retirement;
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::jiff::SignedDuration;
use kube::api::ApiResource;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A router that records what it is asked and answers as told.
#[derive(Default)]
struct Fake {
    providers: &'static [&'static str],
    calls: Arc<Mutex<Vec<String>>>,
    ready: Arc<Mutex<Option<Ready>>>,
    retirement: Arc<Mutex<Retirement>>,
    needs: Vec<Issue>,
}

impl Fake {
    fn new(providers: &'static [&'static str], calls: &Arc<Mutex<Vec<String>>>) -> Fake {
        Fake {
            providers,
            calls: calls.clone(),
            ready: Arc::new(Mutex::new(Some(Ready::No("route not accepted yet".into())))),
            ..Default::default()
        }
    }
    fn call(&self, what: &str) {
        let me = self.providers[0];
        self.calls.lock().unwrap().push(format!("{me} {what}"));
    }
}

impl Router for Fake {
    fn providers(&self) -> &'static [&'static str] {
        self.providers
    }
    fn kinds(&self) -> Vec<ApiResource> {
        Vec::new()
    }
    fn reconcile<'a>(&'a self, _t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<()>> {
        self.call("reconcile");
        async { Ok(()) }.boxed()
    }
    fn get_routes<'a>(&'a self, _t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Option<Routes>>> {
        async { Ok(Some(Routes::default())) }.boxed()
    }
    fn set_routes<'a>(
        &'a self,
        _t: &'a RouteTarget<'a>,
        plan: &'a RoutePlan,
    ) -> BoxFuture<'a, Result<()>> {
        self.call(&format!(
            "set_routes {}/{}",
            plan.primary_weight, plan.canary_weight
        ));
        async { Ok(()) }.boxed()
    }
    fn finalize<'a>(&'a self, _t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<()>> {
        async { Ok(()) }.boxed()
    }
    fn needs(&self, _t: &RouteTarget<'_>) -> Vec<Issue> {
        self.needs.clone()
    }
    fn ready<'a>(&'a self, _t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Ready>> {
        self.call("ready");
        let r = self.ready.lock().unwrap().clone().unwrap();
        async move { Ok(r) }.boxed()
    }
    fn retire<'a>(&'a self, _t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Retirement>> {
        self.call("retire");
        let r = self.retirement.lock().unwrap().clone();
        async move { Ok(r) }.boxed()
    }
}

fn guide() -> (crate::core::Rollout, Value) {
    let canary: api::Canary =
        api::yaml::from_str(include_str!("../../../../examples/podinfo/canary.yaml")).unwrap();
    let service = serde_json::to_value(&canary.spec.as_ref().unwrap().service).unwrap();
    (api::validate(&canary).unwrap().rollout, service)
}

struct World {
    routers: Vec<Box<dyn Router>>,
    calls: Arc<Mutex<Vec<String>>>,
    /// What the new router answers to `ready`.
    new_ready: Arc<Mutex<Option<Ready>>>,
    /// What the old router answers to `retire`.
    old_retirement: Arc<Mutex<Retirement>>,
    rollout: crate::core::Rollout,
    service: Value,
    annotations: BTreeMap<String, String>,
    status: CanaryStatus,
    now: Timestamp,
}

impl World {
    /// A Canary in `phase` on router `old`, with routers `old` and `new`.
    fn new(phase: &str, new: impl FnOnce(Fake) -> Fake) -> World {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (rollout, service) = guide();
        let old = Fake::new(&["old", "old:v2"], &calls);
        let newer = new(Fake::new(&["new"], &calls));
        World {
            new_ready: newer.ready.clone(),
            old_retirement: old.retirement.clone(),
            routers: vec![Box::new(old), Box::new(newer)],
            calls,
            rollout,
            service,
            annotations: BTreeMap::new(),
            status: CanaryStatus {
                phase: Some(phase.into()),
                router: Some(RouterInUse {
                    provider: "old".into(),
                    retiring: None,
                    since: None,
                    moving: None,
                }),
                ..Default::default()
            },
            // Whole seconds: the record keeps milliseconds.
            now: Timestamp::from_second(Timestamp::now().as_second()).unwrap(),
        }
    }

    /// One reconcile wanting `wanted`; its status is kept as the reconcile keeps it.
    async fn reconcile(&mut self, wanted: &str) -> Moved {
        let t = RouteTarget {
            rollout: &self.rollout,
            service: &self.service,
            annotations: &self.annotations,
            label: ("app", "podinfo"),
            owner: Default::default(),
        };
        let moved = advance(&self.routers, wanted, &t, &self.status, self.now)
            .await
            .unwrap();
        moved.apply(&mut self.status, self.now);
        moved
    }

    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn reasons(m: &Moved) -> Vec<(&'static str, bool)> {
    m.notes.iter().map(|n| (n.reason, n.warning)).collect()
}

#[tokio::test]
async fn a_canary_without_a_record_is_on_its_spec_provider() {
    let mut w = World::new("Succeeded", |f| f);
    w.status.router = None;
    let m = w.reconcile("new").await;
    assert_eq!(m.stage, Stage::Settled);
    assert_eq!(
        w.status.router,
        Some(RouterInUse {
            provider: "new".into(),
            retiring: None,
            since: None,
            moving: None,
        })
    );
    assert!(m.notes.is_empty() && m.hold.is_none() && m.condition.is_none());
    assert!(w.take_calls().is_empty());
}

#[tokio::test]
async fn another_name_of_the_same_router_is_no_switch() {
    let mut w = World::new("Succeeded", |f| f);
    let m = w.reconcile("old:v2").await;
    assert_eq!(m.stage, Stage::Settled);
    assert!(w.take_calls().is_empty());
}

#[tokio::test]
async fn while_the_new_router_is_not_ready_the_old_one_stays() {
    let mut w = World::new("Succeeded", |f| f);
    let m = w.reconcile("new").await;
    assert_eq!(m.stage, Stage::Move);
    // The new objects carry everything to the primary; the old router is not touched.
    assert_eq!(
        w.take_calls(),
        ["new set_routes 100/0", "new reconcile", "new ready"]
    );
    assert_eq!(w.status.router.as_ref().unwrap().provider, "old");
    assert_eq!(
        w.status.router.as_ref().unwrap().moving.as_deref(),
        Some("new")
    );
    assert_eq!(m.hold, Some(READY_POLL));
    assert_eq!(reasons(&m), [(MOVING, false), (WAITING, false)]);
    let c = w.status.condition(CONDITION).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", WAITING));
    assert!(
        c.message.contains("route not accepted yet"),
        "{}",
        c.message
    );

    // Still not ready: the same again, told once.
    let m = w.reconcile("new").await;
    assert!(m.notes.is_empty(), "{:?}", m.notes);
    assert_eq!(m.hold, Some(READY_POLL));
    assert!(!w.take_calls().iter().any(|c| c.ends_with("retire")));
    assert_eq!(w.status.router.as_ref().unwrap().provider, "old");
}

#[tokio::test]
async fn once_ready_the_switch_is_recorded_then_the_old_objects_retire() {
    let mut w = World::new("Succeeded", |f| f);
    w.reconcile("new").await;
    *w.new_ready.lock().unwrap() = Some(Ready::Yes);
    w.take_calls();

    let m = w.reconcile("new").await;
    // Recorded first; nothing is retired in the reconcile that records.
    assert_eq!(
        w.status.router,
        Some(RouterInUse {
            provider: "new".into(),
            retiring: Some("old".into()),
            since: Some(crate::operator::status::format_time(w.now)),
            moving: None,
        })
    );
    assert_eq!(reasons(&m), [(SWITCHED, false)]);
    assert!(m.hold.is_some());
    assert!(!w.take_calls().iter().any(|c| c.ends_with("retire")));

    // The old objects keep serving a while after: not retired yet, and
    // the Canary is looked at again when they may go.
    w.now += SignedDuration::from_secs(4);
    let m = w.reconcile("new").await;
    assert_eq!(m.stage, Stage::Retire("old".into()));
    assert!(w.take_calls().is_empty(), "nothing retired while draining");
    assert_eq!(m.wake, Some(RETIRE_AFTER - Duration::from_secs(4)));
    assert_eq!(m.hold, None, "analysis steps go on meanwhile");
    assert!(m.notes.is_empty());
    w.now += SignedDuration::try_from(RETIRE_AFTER).unwrap();

    *w.old_retirement.lock().unwrap() = Retirement {
        deleted: vec!["VirtualService podinfo".into()],
        ..Default::default()
    };
    let m = w.reconcile("new").await;
    assert_eq!(m.stage, Stage::Retire("old".into()));
    assert_eq!(w.take_calls(), ["old retire"]);
    assert_eq!(m.hold, None, "analysis steps go on while retiring");
    assert_eq!(w.status.router.as_ref().unwrap().retiring, None);
    assert_eq!(w.status.router.as_ref().unwrap().since, None);
    assert_eq!(reasons(&m), [("Retired", false), (SWITCHED, false)]);
    assert!(m.notes[0].message.contains("VirtualService podinfo"));

    let m = w.reconcile("new").await;
    assert_eq!(m.stage, Stage::Settled);
    assert!(m.notes.is_empty());
    assert!(w.take_calls().is_empty());
}

#[tokio::test]
async fn a_move_given_up_retires_what_was_made_for_it() {
    let mut w = World::new("Succeeded", |f| f);
    w.reconcile("new").await;
    w.take_calls();
    // spec.provider back while the new router is not ready.
    let m = w.reconcile("old").await;
    assert_eq!(m.stage, Stage::Settled);
    assert_eq!(reasons(&m), [("Cancelled", false)]);
    assert!(
        m.notes[0]
            .message
            .contains("stays on old; removing the new objects made for the move"),
        "{}",
        m.notes[0].message
    );
    let record = w.status.router.clone().unwrap();
    assert_eq!(
        (record.provider.as_str(), record.retiring.as_deref()),
        ("old", Some("new"))
    );
    assert_eq!((record.moving, record.since), (None, None));
    assert!(m.wake.is_some() && m.hold.is_none());
    assert!(w.take_calls().is_empty());

    // Nothing to wait for: the new router's objects never carried traffic.
    let m = w.reconcile("old").await;
    assert_eq!(m.stage, Stage::Retire("new".into()));
    assert_eq!(w.take_calls(), ["new retire"]);
    assert_eq!(w.status.router.as_ref().unwrap().retiring, None);
    let c = w.status.condition(CONDITION).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Cancelled")
    );
    assert!(c
        .message
        .ends_with("the new objects made for the move are gone"));
    let m = w.reconcile("old").await;
    assert_eq!(m.stage, Stage::Settled);
    assert!(m.notes.is_empty(), "{:?}", m.notes);
}

#[tokio::test]
async fn mid_analysis_the_switch_waits_for_the_analysis_to_end() {
    for phase in ["Progressing", "WaitingPromotion", "Promoting", "Finalising"] {
        let mut w = World::new(phase, |f| f);
        *w.new_ready.lock().unwrap() = Some(Ready::Yes);
        let m = w.reconcile("new").await;
        assert_eq!(m.stage, Stage::Deferred, "{phase}");
        assert!(w.take_calls().is_empty(), "{phase}: no router is touched");
        assert_eq!(m.hold, None, "{phase}: the analysis goes on");
        assert_eq!(w.status.router.as_ref().unwrap().provider, "old");
        assert_eq!(reasons(&m), [(DEFERRED, false)]);
        assert!(m.notes[0].message.contains("finishes on old"));
        let m = w.reconcile("new").await;
        assert!(m.notes.is_empty(), "{phase}: told once");

        // The analysis ended: now traffic moves.
        w.status.phase = Some("Succeeded".into());
        let m = w.reconcile("new").await;
        assert_eq!(m.stage, Stage::Move, "{phase}");
        assert_eq!(w.status.router.as_ref().unwrap().provider, "new");
    }
}

#[tokio::test]
async fn a_step_not_finished_is_finished_on_the_old_router() {
    let mut w = World::new("Succeeded", |f| f);
    w.status.pending_step = Some(Default::default());
    let m = w.reconcile("new").await;
    assert_eq!(m.stage, Stage::Deferred);
    assert!(w.take_calls().is_empty());
}

#[tokio::test]
async fn waiting_for_approval_moves() {
    let mut w = World::new("Waiting", |f| f);
    let m = w.reconcile("new").await;
    assert_eq!(m.stage, Stage::Move);
}

#[tokio::test]
async fn a_spec_lacking_what_the_new_router_needs_is_refused() {
    let mut w = World::new("Succeeded", |mut f| {
        f.needs = vec![Issue {
            field: "spec.service.gatewayRefs".into(),
            problem: "missing".into(),
            fix: "name the Gateway".into(),
        }];
        f
    });
    let m = w.reconcile("new").await;
    assert!(w.take_calls().is_empty(), "nothing is created");
    assert_eq!(w.status.router.as_ref().unwrap().provider, "old");
    assert_eq!(reasons(&m), [(INVALID, true)]);
    assert!(m.notes[0]
        .message
        .contains("spec.service.gatewayRefs: missing; name the Gateway"));
    let c = w.status.condition(CONDITION).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", INVALID));
    assert!(m.hold.is_some());
    let m = w.reconcile("new").await;
    assert!(m.notes.is_empty(), "told once");

    // Back to the old provider: the refusal is withdrawn.
    let m = w.reconcile("old").await;
    assert_eq!(m.stage, Stage::Settled);
    assert_eq!(w.status.condition(CONDITION).unwrap().reason, "Cancelled");
}

#[tokio::test]
async fn virtual_nodes_kept_while_injection_is_on_are_retried() {
    let mut w = World::new("Succeeded", |f| f);
    w.status.router = Some(RouterInUse {
        provider: "new".into(),
        retiring: Some("old".into()),
        since: None,
        moving: None,
    });
    *w.old_retirement.lock().unwrap() = Retirement {
        deleted: vec!["VirtualRouter podinfo".into()],
        kept: vec!["VirtualNode podinfo-primary".into()],
        why: "namespace test has label appmesh.k8s.aws/sidecarInjectorWebhook=enabled".into(),
    };
    let m = w.reconcile("new").await;
    assert_eq!(reasons(&m), [("Retired", false), (RETIRE_PENDING, true)]);
    assert!(m.notes[1]
        .message
        .contains("VirtualNode podinfo-primary kept"));
    assert!(m.notes[1]
        .message
        .contains("sidecarInjectorWebhook=enabled"));
    assert_eq!(
        w.status.router.as_ref().unwrap().retiring.as_deref(),
        Some("old")
    );
    assert_eq!(m.hold, None);

    // Still on: retried, not told again.
    w.old_retirement.lock().unwrap().deleted.clear();
    let m = w.reconcile("new").await;
    assert_eq!(w.take_calls(), ["old retire", "old retire"]);
    assert!(m.notes.is_empty(), "{:?}", m.notes);

    // Injection off and the pods restarted: the nodes go.
    *w.old_retirement.lock().unwrap() = Retirement {
        deleted: vec!["VirtualNode podinfo-primary".into()],
        ..Default::default()
    };
    let m = w.reconcile("new").await;
    assert_eq!(reasons(&m), [("Retired", false), (SWITCHED, false)]);
    assert_eq!(w.status.router.as_ref().unwrap().retiring, None);
}

/// `status.router` as stored.
mod record {
    use super::super::*;

    #[test]
    fn status_router_is_optional_and_survives_a_round_trip() {
        let stored = serde_json::json!({
            "phase": "Succeeded",
            "router": {"provider": "gatewayapi:v1", "retiring": "appmesh:v1beta2"},
        });
        let s: CanaryStatus = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(
            s.router,
            Some(RouterInUse {
                provider: "gatewayapi:v1".into(),
                retiring: Some("appmesh:v1beta2".into()),
                since: None,
                moving: None,
            })
        );
        assert_eq!(
            serde_json::to_value(&s).unwrap()["router"],
            stored["router"]
        );
        // Written by hand into something else: dropped, not an unreadable status.
        let s: CanaryStatus =
            serde_json::from_value(serde_json::json!({"router": "appmesh"})).unwrap();
        assert_eq!(s.router, None);
        // The CRD does not require it, so Canaries written by Flagger stay valid.
        let schema = crate::operator::crd::schema_of::<CanaryStatus>();
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        assert!(!required.contains(&serde_json::json!("router")));
        assert_eq!(
            schema["properties"]["router"]["required"],
            serde_json::json!(["provider"])
        );
    }
}
