//! Echo server and load generator for the L4 proxy benchmark (bench/proxy/run.sh).
//!
//!   mesh-proxy-loadgen free-ports N
//!       binds N distinct free 127.0.0.1 ports at once, prints them, releases them
//!   mesh-proxy-loadgen echo ADDR
//!       TCP echo server (the one backend every path ends at)
//!   mesh-proxy-loadgen check ADDR
//!       one 1 KiB echo through ADDR; exit 0 if it came back intact within 2 s
//!   mesh-proxy-loadgen rtt ADDR [--conns 64] [--size 1024] [--secs 10] [--warmup 1]
//!       closed loop: every connection writes SIZE bytes and reads the echo back,
//!       again and again; prints one line of key=value (rate, p50/p90/p99/p99.9/max)
//!   mesh-proxy-loadgen hold ADDR [--steps 5000,9900] [--parallel 128] [--pause 4]
//!       opens connections up to each step (each verified by a 16-byte echo), prints
//!       `held=N ...`, holds them all for PAUSE seconds, then goes to the next step;
//!       exits (closing everything) after the last pause
//!
//! Output lines are `key=value` separated by spaces so the shell script can pick
//! fields with sed. Exit status is non-zero on any failed or corrupted echo.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, Semaphore};

fn usage() -> ExitCode {
    eprintln!(
        "usage: mesh-proxy-loadgen (free-ports N | echo ADDR | check ADDR | \
         rtt ADDR [--conns N] [--size B] [--secs S] [--warmup S] | \
         hold ADDR [--steps N,N..] [--parallel P] [--pause S])"
    );
    ExitCode::from(64)
}

/// `--name value` options after the positional argument.
struct Opts(Vec<String>);

impl Opts {
    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        let flag = format!("--{name}");
        match self.0.iter().position(|a| *a == flag) {
            Some(i) => match self.0.get(i + 1).and_then(|v| v.parse().ok()) {
                Some(v) => v,
                None => {
                    eprintln!("bad or missing value for {flag}");
                    std::process::exit(64);
                }
            },
            None => default,
        }
    }
    fn get_str(&self, name: &str, default: &str) -> String {
        self.get(name, default.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        return usage();
    };
    let Some(pos) = args.get(1).cloned() else {
        return usage();
    };
    let opts = Opts(args[2..].to_vec());
    if cmd == "free-ports" {
        return free_ports(&pos);
    }
    let addr: SocketAddr = match pos.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bad address {pos}: {e}");
            return usage();
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        match cmd.as_str() {
            "echo" => echo(addr).await,
            "check" => check(addr).await,
            "rtt" => {
                rtt(
                    addr,
                    opts.get("conns", 64usize),
                    opts.get("size", 1024usize),
                    opts.get("secs", 10f64),
                    opts.get("warmup", 1f64),
                )
                .await
            }
            "hold" => {
                let steps: Vec<usize> = opts
                    .get_str("steps", "5000,9900")
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
                hold(addr, steps, opts.get("parallel", 128usize), opts.get("pause", 4f64)).await
            }
            _ => Err("unknown command".to_string()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-proxy-loadgen {}: {e}", args[0]);
            ExitCode::FAILURE
        }
    }
}

fn free_ports(n: &str) -> ExitCode {
    let Ok(n) = n.parse::<usize>() else {
        return usage();
    };
    // Hold all of them at once so they are distinct, then release.
    let socks: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let ports: Vec<String> = socks
        .iter()
        .map(|s| s.local_addr().unwrap().port().to_string())
        .collect();
    println!("{}", ports.join(" "));
    ExitCode::SUCCESS
}

async fn echo(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening={}", listener.local_addr().unwrap());
    let _ = std::io::stdout().flush();
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("echo: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

fn payload(size: usize, seq: u64) -> Vec<u8> {
    let mut buf: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let tag = seq.to_le_bytes();
    let n = tag.len().min(size);
    buf[..n].copy_from_slice(&tag[..n]);
    buf
}

async fn echo_once(stream: &mut TcpStream, out: &[u8], back: &mut [u8]) -> Result<(), String> {
    stream.write_all(out).await.map_err(|e| format!("write: {e}"))?;
    stream.read_exact(back).await.map_err(|e| format!("read: {e}"))?;
    if out != back {
        return Err("echo came back corrupted".into());
    }
    Ok(())
}

async fn check(addr: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let out = payload(1024, 7);
        let mut back = vec![0u8; out.len()];
        echo_once(&mut s, &out, &mut back).await
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

async fn rtt(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    secs: f64,
    warmup: f64,
) -> Result<(), String> {
    // Connect everything first (TLS handshakes through the proxies happen here),
    // then start all loops together.
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        streams.push(s);
    }
    let barrier = Arc::new(Barrier::new(conns + 1));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(conns);
    for (c, mut s) in streams.into_iter().enumerate() {
        let barrier = barrier.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples: Vec<u64> = Vec::with_capacity(1 << 16);
            let mut back = vec![0u8; size];
            // A first echo before the clock starts: the path is fully set up.
            if echo_once(&mut s, &payload(size, 0), &mut back).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
                barrier.wait().await;
                return samples;
            }
            barrier.wait().await;
            let start = Instant::now();
            let measure_from = start + Duration::from_secs_f64(warmup);
            let end = measure_from + Duration::from_secs_f64(secs);
            let mut seq = (c as u64) << 40;
            loop {
                seq += 1;
                let out = payload(size, seq);
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                if let Err(e) = echo_once(&mut s, &out, &mut back).await {
                    eprintln!("conn {c}: {e}");
                    errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let t1 = Instant::now();
                if t0 >= measure_from && t1 <= end {
                    samples.push((t1 - t0).as_nanos() as u64);
                }
            }
            samples
        }));
    }
    barrier.wait().await;
    let mut all: Vec<u64> = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())?);
    }
    all.sort_unstable();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "conns={conns} size={size} secs={secs} msgs={} rate={:.0} p50_us={:.1} p90_us={:.1} \
         p99_us={:.1} p999_us={:.1} max_us={:.1} errors={errors}",
        all.len(),
        all.len() as f64 / secs,
        pct(&all, 50.0),
        pct(&all, 90.0),
        pct(&all, 99.0),
        pct(&all, 99.9),
        all.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    if errors > 0 {
        return Err(format!("{errors} connections failed"));
    }
    Ok(())
}

async fn hold(
    addr: SocketAddr,
    steps: Vec<usize>,
    parallel: usize,
    pause: f64,
) -> Result<(), String> {
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let mut held: Vec<TcpStream> = Vec::new();
    for step in steps {
        let want = step.saturating_sub(held.len());
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(want);
        for i in 0..want {
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.unwrap();
                let attempt = async {
                    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
                    let _ = s.set_nodelay(true);
                    let out = payload(16, i as u64);
                    let mut back = [0u8; 16];
                    echo_once(&mut s, &out, &mut back).await?;
                    Ok::<_, String>(s)
                };
                tokio::time::timeout(Duration::from_secs(15), attempt)
                    .await
                    .map_err(|_| "timed out".to_string())?
            }));
        }
        let mut failed = 0usize;
        let mut first_error = None;
        for t in tasks {
            match t.await.map_err(|e| e.to_string())? {
                Ok(s) => held.push(s),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        let took = started.elapsed().as_secs_f64();
        println!(
            "held={} failed={failed} open_secs={took:.2} open_rate={:.0}{}",
            held.len(),
            want.saturating_sub(failed) as f64 / took.max(1e-9),
            first_error.map(|e| format!(" first_error={e:?}")).unwrap_or_default()
        );
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        if failed > 0 {
            return Err(format!("{failed} connections failed"));
        }
    }
    Ok(())
}
