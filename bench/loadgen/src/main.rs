//! Write-load generator for bench/run.sh: drives mesh (Consul HTTP API) and etcd
//! (v3 HTTP/JSON gateway) with the same request pattern over HTTP/1.1 keep-alive
//! connections, one connection per client, and prints ops/s, p50 and p99 latency
//! for each case plus the mesh/etcd ratios.
//!
//! Cases: {kv, catalog} x {each concurrency in --concurrency}. For every case and
//! round, mesh and etcd run back to back (the order alternates between rounds), each
//! for --duration seconds or --max-requests requests, whichever comes first.
//!
//! Only loopback URLs are accepted, http:// or https:// (for https, --cacert names
//! the CA to trust and --cert/--key the client certificate to present, if any).
//! --etcd may be left out to drive mesh alone, and --workloads picks the cases.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Mesh,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Mesh => "mesh",
            System::Etcd => "etcd",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Kv,
    Catalog,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Kv => "kv-put",
            Workload::Catalog => "catalog-register",
        }
    }
}

struct Args {
    mesh: String,
    etcd: String,
    duration: Duration,
    max_requests: u64,
    concurrency: Vec<usize>,
    rounds: usize,
    value_size: usize,
    warmup: u64,
    tsv: Option<String>,
    raw: Option<String>,
    /// Server pids, to tell their CPU use from everyone else's.
    pids: Vec<u32>,
    workloads: Vec<Workload>,
    /// PEM files for https:// targets: the CA to trust, the client certificate and key.
    cacert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: mesh-loadgen --mesh http://127.0.0.1:PORT[,...] --etcd http://127.0.0.1:PORT[,...] \
         [--duration SECS=8] [--max-requests N=200000] [--concurrency 1,64] [--rounds 1] \
         [--value-size 128] [--warmup 200] [--tsv FILE] [--raw FILE] [--pids MESH_PID,ETCD_PID] \
         [--workloads kv,catalog] [--cacert CA.pem] [--cert CLIENT.pem --key CLIENT-KEY.pem]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        mesh: String::new(),
        etcd: String::new(),
        duration: Duration::from_secs(8),
        max_requests: 200_000,
        concurrency: vec![1, 64],
        rounds: 1,
        value_size: 128,
        warmup: 200,
        tsv: None,
        raw: None,
        pids: Vec::new(),
        workloads: vec![Workload::Kv, Workload::Catalog],
        cacert: None,
        cert: None,
        key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let flag = flag.trim_start_matches('-').to_string();
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "mesh" => a.mesh = val(),
            "etcd" => a.etcd = val(),
            "duration" => {
                a.duration = Duration::from_secs_f64(val().parse().unwrap_or_else(|_| usage()))
            }
            "max-requests" => a.max_requests = val().parse().unwrap_or_else(|_| usage()),
            "concurrency" => {
                a.concurrency = val()
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "rounds" => a.rounds = val().parse().unwrap_or_else(|_| usage()),
            "value-size" => a.value_size = val().parse().unwrap_or_else(|_| usage()),
            "warmup" => a.warmup = val().parse().unwrap_or_else(|_| usage()),
            "tsv" => a.tsv = Some(val()),
            "raw" => a.raw = Some(val()),
            "pids" => {
                a.pids = val()
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "workloads" => {
                a.workloads = val()
                    .split(',')
                    .map(|s| match s.trim() {
                        "kv" => Workload::Kv,
                        "catalog" => Workload::Catalog,
                        _ => usage(),
                    })
                    .collect()
            }
            "cacert" => a.cacert = Some(val()),
            "cert" => a.cert = Some(val()),
            "key" => a.key = Some(val()),
            _ => usage(),
        }
    }
    let etcd = a.etcd.split(',').filter(|u| !u.is_empty());
    for url in a.mesh.split(',').chain(etcd) {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| r.starts_with("127.") || r.starts_with("localhost:"));
        if !ok {
            eprintln!("refusing non-loopback URL {url:?}");
            usage();
        }
    }
    if a.concurrency.is_empty()
        || a.concurrency.contains(&0)
        || a.rounds == 0
        || a.workloads.is_empty()
        || a.cert.is_some() != a.key.is_some()
    {
        usage();
    }
    a
}

/// One prepared request: URL and body, built before the clock starts.
fn request(
    sys: System,
    wl: Workload,
    base: &str,
    prefix: &str,
    worker: usize,
    i: u64,
    value: &str,
) -> (String, Vec<u8>) {
    match (sys, wl) {
        (System::Mesh, Workload::Kv) => (
            format!("{base}/v1/kv/{prefix}/w{worker}/k{i}"),
            value.as_bytes().to_vec(),
        ),
        (System::Etcd, Workload::Kv) => {
            let key = format!("{prefix}/w{worker}/k{i}");
            let body = serde_json::json!({"key": B64.encode(key), "value": B64.encode(value)});
            (format!("{base}/v3/kv/put"), body.to_string().into_bytes())
        }
        (System::Mesh, Workload::Catalog) => {
            (format!("{base}/v1/catalog/register"), registration(prefix, worker, i))
        }
        (System::Etcd, Workload::Catalog) => {
            // etcd has no catalog: store the same registration document under a key
            // shaped like a registry entry (node/service).
            let key = format!("{prefix}/nodes/n{worker}/services/web-{i}");
            let doc = registration(prefix, worker, i);
            let body = serde_json::json!({"key": B64.encode(key), "value": B64.encode(doc)});
            (format!("{base}/v3/kv/put"), body.to_string().into_bytes())
        }
    }
}

fn registration(prefix: &str, worker: usize, i: u64) -> Vec<u8> {
    // Node and service addresses are documentation-range (TEST-NET-1) strings: data
    // stored in the catalog, never contacted.
    let node = format!("{}-n{worker}", prefix.replace('/', "-"));
    serde_json::json!({
        "Node": node,
        "Address": format!("192.0.2.{}", worker % 250 + 1),
        "Service": {
            "Service": "web",
            "ID": format!("web-{i}"),
            "Port": 80,
            "Tags": ["bench"],
        }
    })
    .to_string()
    .into_bytes()
}

fn check_response(sys: System, wl: Workload, status: u16, body: &[u8]) -> Result<(), String> {
    if !(200..300).contains(&status) {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    let ok = match (sys, wl) {
        // mesh answers `true` for both KV PUT and catalog registration.
        (System::Mesh, _) => body.trim_ascii() == b"true",
        // etcd's gateway answers {"header":{...,"revision":"N",...}}.
        (System::Etcd, _) => body.windows(8).any(|w| w == b"revision"),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "unexpected body: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    }
}

#[derive(Clone, Debug)]
struct CaseResult {
    sys: System,
    wl: Workload,
    conc: usize,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    p50_us: u64,
    p99_us: u64,
    /// Fewest writes completed in any whole second of the run: shows stalls.
    worst_second: u64,
    /// CPU (in cores) used by processes other than the load generator and the
    /// servers during this run: noise from other work on the machine.
    other_cpu: f64,
}

impl CaseResult {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// The TLS material for https:// targets, read once: the CA to trust (the only root)
/// and the client identity (certificate and key, PEM).
#[derive(Clone, Default)]
struct Tls {
    ca: Option<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

fn read_pem(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("reading {path}: {e}");
        std::process::exit(2)
    })
}

impl Tls {
    fn load(a: &Args) -> Tls {
        let ca = a.cacert.as_deref().map(|p| {
            reqwest::Certificate::from_pem(&read_pem(p)).expect("CA certificate (PEM)")
        });
        let identity = a.cert.as_deref().zip(a.key.as_deref()).map(|(c, k)| {
            let mut pem = read_pem(c);
            pem.push(b'\n');
            pem.extend(read_pem(k));
            reqwest::Identity::from_pem(&pem).expect("client certificate and key (PEM)")
        });
        Tls { ca, identity }
    }
}

fn client(tls: &Tls) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30));
    if let Some(ca) = &tls.ca {
        b = b.tls_built_in_root_certs(false).add_root_certificate(ca.clone());
    }
    if let Some(id) = &tls.identity {
        b = b.identity(id.clone());
    }
    b.build().expect("http client")
}

#[allow(clippy::too_many_arguments)]
async fn run_case(
    sys: System,
    wl: Workload,
    base: &str,
    prefix: &str,
    conc: usize,
    duration: Duration,
    max_requests: u64,
    value: Arc<String>,
    tls: &Tls,
) -> CaseResult {
    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + duration;
    let mut handles = Vec::with_capacity(conc);
    for worker in 0..conc {
        let (issued, stop, value) = (issued.clone(), stop.clone(), value.clone());
        // One client per worker: each worker owns one keep-alive connection.
        let http = client(tls);
        // `base` may list several members (comma-separated): workers are
        // spread over them in turn, as clients of a cluster are.
        let members: Vec<&str> = base.split(',').collect();
        let base = members[worker % members.len()].to_string();
        let prefix = prefix.to_string();
        handles.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(4096);
            let mut per_second: Vec<u64> = vec![0; duration.as_secs() as usize + 2];
            let mut errors = 0u64;
            let mut first_error = None;
            let mut i = 0u64;
            loop {
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                if issued.fetch_add(1, Ordering::Relaxed) >= max_requests {
                    break;
                }
                let (url, body) = request(sys, wl, &base, &prefix, worker, i, &value);
                i += 1;
                let t0 = Instant::now();
                let res = async {
                    let rb = match sys {
                        System::Mesh => http.put(url.as_str()),
                        System::Etcd => http
                            .post(url.as_str())
                            .header("content-type", "application/json"),
                    };
                    let resp = rb.body(body).send().await?;
                    let status = resp.status().as_u16();
                    let bytes = resp.bytes().await?;
                    Ok::<_, reqwest::Error>((status, bytes))
                }
                .await;
                let dt = t0.elapsed();
                let outcome = match res {
                    Ok((status, bytes)) => check_response(sys, wl, status, &bytes),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => {
                        lat.push(dt.as_micros().min(u32::MAX as u128) as u32);
                        let sec = (t0 + dt - start).as_secs() as usize;
                        if let Some(c) = per_second.get_mut(sec) {
                            *c += 1;
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        if errors >= 100 {
                            // A broken server: stop the whole case rather than spin.
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            (lat, per_second, errors, first_error)
        }));
    }
    let mut all: Vec<u32> = Vec::new();
    let mut per_second: Vec<u64> = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        let (lat, ps, e, fe) = h.await.expect("worker panicked");
        all.extend(lat);
        for (i, c) in ps.into_iter().enumerate() {
            if i >= per_second.len() {
                per_second.resize(i + 1, 0);
            }
            per_second[i] += c;
        }
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    let elapsed = start.elapsed();
    // Only whole seconds inside the run count (the last partial second is dropped).
    let whole = (elapsed.as_secs() as usize).min(per_second.len());
    let worst_second = per_second[..whole].iter().copied().min().unwrap_or(0);
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        let idx = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[idx] as u64
    };
    CaseResult {
        sys,
        wl,
        conc,
        ops: all.len() as u64,
        errors,
        first_error,
        elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        worst_second,
        other_cpu: 0.0,
    }
}

/// What the rest of the machine did during a run (other builds share these 2
/// cores): busy CPU ticks, machine-wide and of our own processes.
#[derive(Clone, Copy, Default)]
struct Usage {
    busy_ticks: u64,
    ours_ticks: u64,
}

/// USER_HZ: /proc/stat and /proc/PID/stat count in 1/100 s on Linux.
const TICKS_PER_SEC: f64 = 100.0;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn proc_ticks(pid: &str) -> u64 {
    let stat = read(&format!("/proc/{pid}/stat"));
    // Fields after the ")" that closes the command name; utime and stime are the
    // 12th and 13th of those (14th and 15th overall).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn usage_now(pids: &[u32]) -> Usage {
    let stat = read("/proc/stat");
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy_ticks = cpu
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 8 && *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    let mut ours: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    ours.push("self".into());
    let ours_ticks = ours.iter().map(|p| proc_ticks(p)).sum();
    Usage {
        busy_ticks,
        ours_ticks,
    }
}

/// Other processes' CPU, in cores, between two samples.
fn others(a: Usage, b: Usage, secs: f64) -> f64 {
    (b.busy_ticks.saturating_sub(a.busy_ticks))
        .saturating_sub(b.ours_ticks.saturating_sub(a.ours_ticks)) as f64
        / TICKS_PER_SEC
        / secs
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = parse_args();
    let value = Arc::new("v".repeat(args.value_size));
    let tls = Tls::load(&args);
    let mut systems = vec![(System::Mesh, &args.mesh)];
    if !args.etcd.is_empty() {
        systems.push((System::Etcd, &args.etcd));
    }

    let mut warmup_ops: Vec<(System, u64)> = Vec::new();
    // Warm-up: open connections, let both servers settle (leader elected, caches
    // warm). Not measured.
    for &(sys, base) in &systems {
        for &wl in &args.workloads {
            let r = run_case(
                sys,
                wl,
                base,
                &format!("bench/warmup-{}", wl.name()),
                4,
                Duration::from_secs(10),
                args.warmup,
                value.clone(),
                &tls,
            )
            .await;
            if r.errors > 0 {
                eprintln!(
                    "warm-up against {} ({}) failed: {}",
                    sys.name(),
                    wl.name(),
                    r.first_error.unwrap_or_default()
                );
                std::process::exit(1);
            }
            warmup_ops.push((sys, r.ops));
        }
    }

    let mut results: Vec<CaseResult> = Vec::new();
    let mut failed = false;
    for &wl in &args.workloads {
        for &conc in &args.concurrency {
            for round in 0..args.rounds {
                let mut order = systems.clone();
                if round % 2 == 1 {
                    order.reverse();
                }
                for (sys, base) in order {
                    let prefix = format!("bench/{}/c{conc}/r{round}", wl.name());
                    let before = usage_now(&args.pids);
                    let mut r = run_case(
                        sys,
                        wl,
                        base,
                        &prefix,
                        conc,
                        args.duration,
                        args.max_requests,
                        value.clone(),
                        &tls,
                    )
                    .await;
                    r.other_cpu = others(before, usage_now(&args.pids), r.elapsed.as_secs_f64());
                    eprintln!(
                        "  {:<17} c={:<3} round {} {:<4}: {:>8} ok {:>4} err in {:>6.2}s  {:>9.1} ops/s  p50 {:>8} ms  p99 {:>8} ms  worst 1s {:>6}  | other processes: {:.2} cores",
                        wl.name(),
                        conc,
                        round + 1,
                        sys.name(),
                        r.ops,
                        r.errors,
                        r.elapsed.as_secs_f64(),
                        r.ops_per_sec(),
                        ms(r.p50_us),
                        ms(r.p99_us),
                        r.worst_second,
                        r.other_cpu,
                    );
                    if r.errors > 0 {
                        failed = true;
                        eprintln!(
                            "    first error from {}: {}",
                            sys.name(),
                            r.first_error.clone().unwrap_or_default()
                        );
                    }
                    results.push(r);
                }
            }
        }
    }

    // Summary: per case, the median over rounds of each metric.
    println!();
    println!(
        "| case | clients | mesh ops/s | etcd ops/s | ops/s mesh/etcd | mesh p50 ms | etcd p50 ms | p50 mesh/etcd | mesh p99 ms | etcd p99 ms | p99 mesh/etcd | other processes' CPU, max cores, mesh / etcd runs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut tsv = String::from(
        "case\tclients\tmesh_ops\tetcd_ops\tops_ratio\tmesh_p50_ms\tetcd_p50_ms\tp50_ratio\tmesh_p99_ms\tetcd_p99_ms\tp99_ratio\tmesh_errors\tetcd_errors\n",
    );
    for &wl in &args.workloads {
        for &conc in &args.concurrency {
            let pick = |sys: System| -> Vec<&CaseResult> {
                results
                    .iter()
                    .filter(|r| r.sys == sys && r.wl == wl && r.conc == conc)
                    .collect()
            };
            let stat = |sys: System| {
                let rs = pick(sys);
                (
                    median(rs.iter().map(|r| r.ops_per_sec()).collect()),
                    median(rs.iter().map(|r| r.p50_us as f64 / 1000.0).collect()),
                    median(rs.iter().map(|r| r.p99_us as f64 / 1000.0).collect()),
                    rs.iter().map(|r| r.errors).sum::<u64>(),
                )
            };
            let noise = |sys: System| {
                let rs = pick(sys);
                let c = rs.iter().map(|r| r.other_cpu).fold(0.0, f64::max);
                format!("{c:.2}")
            };
            let (m_ops, m_p50, m_p99, m_err) = stat(System::Mesh);
            let (e_ops, e_p50, e_p99, e_err) = stat(System::Etcd);
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            let r_ops = ratio(m_ops, e_ops);
            let r_p50 = ratio(m_p50, e_p50);
            let r_p99 = ratio(m_p99, e_p99);
            let (name, m_noise, e_noise) = (wl.name(), noise(System::Mesh), noise(System::Etcd));
            println!(
                "| {name} | {conc} | {m_ops:.0} | {e_ops:.0} | {r_ops:.2}x | {m_p50:.2} | {e_p50:.2} | {r_p50:.2}x \
                 | {m_p99:.2} | {e_p99:.2} | {r_p99:.2}x | {m_noise} / {e_noise} |"
            );
            tsv.push_str(&format!(
                "{name}\t{conc}\t{m_ops:.1}\t{e_ops:.1}\t{r_ops:.3}\t{m_p50:.3}\t{e_p50:.3}\t{r_p50:.3}\t\
                 {m_p99:.3}\t{e_p99:.3}\t{r_p99:.3}\t{m_err}\t{e_err}\n"
            ));
        }
    }
    println!();
    println!("ops/s ratio > 1 means mesh is faster; latency ratio > 1 means mesh is slower.");
    if let Some(path) = &args.tsv {
        if let Err(e) = std::fs::write(path, tsv) {
            eprintln!("writing {path}: {e}");
            failed = true;
        }
    }
    if let Some(path) = &args.raw {
        // One line per measured run, plus the warm-up totals, for CPU-per-write maths.
        let mut raw = String::from("case\tclients\tsystem\tok\terrors\tsecs\tops_per_sec\tp50_ms\tp99_ms\tworst_1s\tother_cores\n");
        for r in &results {
            raw.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{:.3}\t{:.1}\t{:.3}\t{:.3}\t{}\t{:.2}\n",
                r.wl.name(),
                r.conc,
                r.sys.name(),
                r.ops,
                r.errors,
                r.elapsed.as_secs_f64(),
                r.ops_per_sec(),
                r.p50_us as f64 / 1000.0,
                r.p99_us as f64 / 1000.0,
                r.worst_second,
                r.other_cpu
            ));
        }
        for (sys, n) in &warmup_ops {
            raw.push_str(&format!("warmup\t4\t{}\t{n}\t0\t0\t0\t0\t0\t0\t0\n", sys.name()));
        }
        if let Err(e) = std::fs::write(path, raw) {
            eprintln!("writing {path}: {e}");
            failed = true;
        }
    }
    if failed {
        eprintln!("some requests failed; see the errors above");
        std::process::exit(1);
    }
}
