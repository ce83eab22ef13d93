# Generates fieldvault.json (the Grafana dashboard): python3 deploy/grafana/generate.py
import json
panels=[]; y=0
def sel(extra=""):
    return '{job=~"$job", instance=~"$instance"' + ("," + extra if extra else "") + '}'
def row(title):
    global y
    panels.append({"type":"row","title":title,"collapsed":False,"gridPos":{"h":1,"w":24,"x":0,"y":y},"id":len(panels)+1,"panels":[]}); y+=1
def ts(title, targets, unit, x):
    panels.append({"type":"timeseries","title":title,"datasource":{"type":"prometheus","uid":"${datasource}"},
       "gridPos":{"h":8,"w":12,"x":x,"y":y},"id":len(panels)+1,
       "fieldConfig":{"defaults":{"unit":unit},"overrides":[]},"options":{"legend":{"displayMode":"table","placement":"right"},"tooltip":{"mode":"multi"}},
       "targets":[{"refId":chr(65+i),"expr":e,"legendFormat":l} for i,(e,l) in enumerate(targets)]})
def pair(a,b):
    global y
    ts(*a, x=0); ts(*b, x=12); y+=8
R="[$__rate_interval]"
ALLOWED='outcome="allowed"'; REFUSED='outcome=~"denied|rate_limited"'; OKC='outcome="ok"'; FAILED='outcome="failed"'; NOTOK='code!="OK"'
q=lambda p,s: "histogram_quantile(%s, %s)" % (p, s)
row("RPCs")
pair(("Calls per second by method", [("sum by (method) (rate(fieldvault_rpc_total"+sel()+R+"))","{{method}}")], "reqps"),
     ("Errors per second by method and code", [("sum by (method, code) (rate(fieldvault_rpc_total"+sel(NOTOK)+R+"))","{{method}} {{code}}")], "reqps"))
pair(("Latency p99 by method", [(q(0.99,"sum by (method, le) (rate(fieldvault_rpc_duration_seconds_bucket"+sel()+R+"))"),"{{method}} p99")], "s"),
     ("Latency p50 by method", [(q(0.5,"sum by (method, le) (rate(fieldvault_rpc_duration_seconds_bucket"+sel()+R+"))"),"{{method}} p50")], "s"))
row("Reveals")
pair(("Reveals by caller × category × purpose", [("sum by (caller, category, purpose) (rate(fieldvault_detokenize_items_total"+sel(ALLOWED)+R+"))","{{caller}} {{category}} {{purpose}}")], "ops"),
     ("Denials and rate limits by caller", [("sum by (caller, outcome) (rate(fieldvault_detokenize_items_total"+sel(REFUSED)+R+"))","{{caller}} {{outcome}}")], "ops"))
pair(("Break-glass reveals", [("sum by (caller, category) (increase(fieldvault_break_glass_reveals_total"+sel()+R+"))","{{caller}} {{category}}")], "short"),
     ("Deterministic tokenizations by caller (oracle watch)", [("sum by (caller, category) (rate(fieldvault_deterministic_tokenize_fields_total"+sel()+R+"))","{{caller}} {{category}}")], "ops"))
row("Access log")
pair(("Commit flush size", [(q(0.5,"sum by (le) (rate(fieldvault_access_log_batch_entries_bucket"+sel()+R+"))"),"entries p50"),
                            (q(0.99,"sum by (le) (rate(fieldvault_access_log_batch_entries_bucket"+sel()+R+"))"),"entries p99"),
                            (q(0.5,"sum by (le) (rate(fieldvault_access_log_batch_calls_bucket"+sel()+R+"))"),"calls p50")], "short"),
     ("Commit latency and failures", [(q(0.99,"sum by (le) (rate(fieldvault_access_log_commit_seconds_bucket"+sel(OKC)+R+"))"),"p99"),
                                      (q(0.5,"sum by (le) (rate(fieldvault_access_log_commit_seconds_bucket"+sel(OKC)+R+"))"),"p50"),
                                      ("sum(rate(fieldvault_access_log_commit_seconds_count"+sel(FAILED)+R+"))","failed/s")], "s"))
pair(("Verify runs by result", [("sum by (result) (increase(fieldvault_audit_verify_total"+sel()+R+"))","{{result}}")], "short"),
     ("Chain conflicts (someone else wrote at the live position)", [("sum by (instance) (increase(fieldvault_audit_chain_conflicts_total"+sel()+R+"))","{{instance}}")], "short"))
row("Keys")
pair(("Key versions by category and state", [("max by (category, state) (fieldvault_key_versions"+sel()+")","{{category}} {{state}}")], "short"),
     ("Active key age / cryptoperiod", [("max by (category) (fieldvault_key_active_age_seconds"+sel()+") / max by (category) (fieldvault_key_cryptoperiod_seconds"+sel()+")","{{category}}")], "percentunit"))
pair(("Rewrap: data keys remaining under old versions", [("max by (category) (fieldvault_rewrap_remaining_data_keys"+sel()+")","{{category}}")], "short"),
     ("Process CPU and memory", [("rate(fieldvault_process_process_cpu_seconds_total"+sel()+R+")","{{instance}} cpu"),("fieldvault_process_process_resident_memory_bytes"+sel()+" / 1e9","{{instance}} RSS GB")], "short"))
row("Dependencies")
pair(("PostgreSQL: up and pool", [("min by (instance) (fieldvault_db_up"+sel()+")","{{instance}} up"),("max by (instance, state) (fieldvault_db_pool_connections"+sel()+")","{{instance}} {{state}}"),("max by (instance) (fieldvault_db_pool_max"+sel()+")","{{instance}} max")], "short"),
     ("Redis: up and local-budget fallbacks", [("min by (instance) (fieldvault_redis_up"+sel()+")","{{instance}} up"),("sum by (instance) (rate(fieldvault_rate_limit_local_fallback_total"+sel()+R+"))","{{instance}} fallbacks/s")], "short"))
ds={"type":"prometheus","uid":"${datasource}"}
dash={"title":"fieldvault","uid":"fieldvault","schemaVersion":39,"version":1,"editable":True,"time":{"from":"now-6h","to":"now"},"refresh":"30s","tags":["fieldvault","security"],
 "templating":{"list":[{"name":"datasource","type":"datasource","query":"prometheus","label":"Prometheus"},
   {"name":"job","type":"query","datasource":ds,"query":"label_values(fieldvault_rpc_total, job)","includeAll":True,"multi":True,"current":{"text":"All","value":"$__all"},"refresh":2},
   {"name":"instance","type":"query","datasource":ds,"query":"label_values(fieldvault_rpc_total{job=~\"$job\"}, instance)","includeAll":True,"multi":True,"current":{"text":"All","value":"$__all"},"refresh":2}]},
 "annotations":{"list":[]},"panels":panels}
import os
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fieldvault.json'),'w').write(json.dumps(dash,indent=2,ensure_ascii=False)+"\n")
print(len(panels))
