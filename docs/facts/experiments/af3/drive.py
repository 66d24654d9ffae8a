import json, os, sys, time, urllib.request, urllib.error, uuid
base = sys.argv[1].rstrip("/") + "/api/v2"
T0 = time.monotonic()
def log(*a): print("[%6.1fs]" % (time.monotonic() - T0), *a, flush=True)
def call(method, path, body=None, tries=5):
    data = json.dumps(body).encode() if body is not None else None
    for i in range(tries):
        req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                t = r.read(); return json.loads(t) if t else None
        except urllib.error.HTTPError as e:
            if e.code < 500 or i == tries - 1:
                raise RuntimeError("%s %s -> %s %s" % (method, path, e.code, e.read()[:300]))
        except urllib.error.URLError:
            if i == tries - 1: raise
        time.sleep(2)
def wait(pred, timeout=240, step=1):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        try:
            v = pred()
            if v: return v
        except Exception as e:
            pass
        time.sleep(step)
    return None
dags = ["producer_a", "producer_b", "producer_fail", "consumer_a", "consumer_all", "consumer_f", "consumer_or_cron"]
wait(lambda: call("GET", "/monitor/health"), 300, 2); log("api healthy")
wait(lambda: all(call("GET", "/dags/%s/details" % d) for d in dags), 300, 2); log("dags parsed")
for d in dags:
    dd = call("GET", "/dags/%s/details" % d)
    if d in ("consumer_a", "consumer_or_cron"): log(d, "paused=", dd["is_paused"], "timetable=", dd.get("timetable_summary"), dd.get("timetable_description"))
    call("PATCH", "/dags/%s" % d, {"is_paused": False})
log("assets:", [(a["id"], a["name"], a["uri"]) for a in call("GET", "/assets")["assets"]])
def trigger(d):
    rid = "manual__%s" % uuid.uuid4().hex[:8]
    r = call("POST", "/dags/%s/dagRuns" % d, {"dag_run_id": rid, "logical_date": None})
    return rid, r
def run_state(d, rid): return call("GET", "/dags/%s/dagRuns/%s" % (d, rid))["state"]
def wait_run(d, rid):
    return wait(lambda: run_state(d, rid) in ("success", "failed") and run_state(d, rid), 240, 1)
def runs(d): return call("GET", "/dags/%s/dagRuns?order_by=run_after" % d)["dag_runs"]

rid, r = trigger("producer_a"); log("manual run logical_date:", r["logical_date"], "run_after:", r["run_after"])
log("producer_a #1", wait_run("producer_a", rid))
wait(lambda: [x for x in runs("consumer_a") if x["state"] == "running"], 120, 1); log("consumer_a run 1 running")
for i in (2, 3):
    rid, _ = trigger("producer_a"); log("producer_a #%d" % i, wait_run("producer_a", rid))
log("queued events for consumer_a:", [(q["asset_id"], q["created_at"]) for q in call("GET", "/dags/consumer_a/assets/queuedEvents")["queued_events"]])
rid, _ = trigger("producer_fail"); log("producer_fail", wait_run("producer_fail", rid))
rid, _ = trigger("producer_b"); log("producer_b", wait_run("producer_b", rid))
wait(lambda: len(runs("consumer_a")) >= 2 and all(x["state"] in ("success", "failed") for x in runs("consumer_a")), 150, 2)
time.sleep(8)
ca = runs("consumer_a")
log("consumer_a runs:", [(x["dag_run_id"], x["run_type"], x["logical_date"], x["state"]) for x in ca])
for x in ca:
    ev = call("GET", "/dags/consumer_a/dagRuns/%s/upstreamAssetEvents" % x["dag_run_id"])
    log("  consumed by", x["dag_run_id"], [(e["source_dag_id"], e["source_run_id"], e["extra"]) for e in ev["asset_events"]])
wait(lambda: runs("consumer_all"), 60, 2)
log("consumer_all runs:", [(x["dag_run_id"], x["state"]) for x in runs("consumer_all")])
log("consumer_or_cron runs:", [(x["dag_run_id"], x["run_type"]) for x in runs("consumer_or_cron")])
log("consumer_f runs:", runs("consumer_f"))
evs = call("GET", "/assets/events?order_by=timestamp")["asset_events"]
log("asset events:", [(e["name"], e["source_dag_id"], e["extra"]) for e in evs])
prun = runs("producer_a")[0]["dag_run_id"]
x = call("GET", "/dags/producer_a/dagRuns/%s/taskInstances/make_a/xcomEntries/report" % prun)
log("xcom report:", x["key"], repr(x["value"]))
x = call("GET", "/dags/producer_a/dagRuns/%s/taskInstances/make_a/xcomEntries/report?deserialize=true" % prun)
log("xcom report deserialize:", repr(x["value"]))
x = call("GET", "/dags/producer_a/dagRuns/%s/taskInstances/make_a/xcomEntries" % prun)
log("xcom keys:", [e["key"] for e in x["xcom_entries"]])
