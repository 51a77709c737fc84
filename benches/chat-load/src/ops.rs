//! Request/response operations (a login, a database read) run by a fixed
//! number of workers, closed or open loop.
//!
//! Chat messages have a sender and a recipient and are accounted for by
//! [`crate::load`]; an operation such as a login is answered on the
//! connection that asked, so timing it needs nothing but the two instants.
//! The two loops mirror those of the message load: a closed loop runs the
//! next operation as soon as the last one finished; an open loop starts
//! operations on a schedule and times each from when it was due, so a
//! stall counts against every operation that should have started in it.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio::time::{sleep, sleep_until};

use crate::load::{progress, Shape, Timing};
use crate::track::{instant_at, now_ns, Latency, Window};
use crate::watch::{Sample, Watcher};

/// What an operation load found.
#[derive(Debug)]
pub struct Outcome {
    pub window: Window,
    /// Latency of operations started (or due) in the window.
    pub latency: Latency,
    /// Operations that started (or were due) in the window and succeeded.
    pub in_window: u64,
    /// Every operation that succeeded.
    pub done: u64,
    /// Operations that failed; the first error's text.
    pub errors: u64,
    pub first_error: Option<String>,
    pub before: Vec<Option<Sample>>,
    pub after: Vec<Option<Sample>>,
}

/// Runs `op(worker, iteration)` on `workers` workers shaped by `shape`
/// (the closed loop has one operation in flight per worker; its
/// `in_flight` is not used).
pub async fn run<F, Fut>(
    workers: usize,
    shape: Shape,
    timing: Timing,
    label: &str,
    watcher: &Watcher,
    op: F,
) -> Result<Outcome>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let start_ns = now_ns();
    let window = Window {
        start_ns: start_ns + nanos(timing.warmup),
        end_ns: start_ns + nanos(timing.warmup + timing.duration),
    };
    let sampler = {
        let watcher = watcher.clone();
        tokio::spawn(async move {
            sleep_until(instant_at(window.start_ns).into()).await;
            let before = watcher.sample();
            sleep_until(instant_at(window.end_ns).into()).await;
            (before, watcher.sample())
        })
    };
    let bar = progress(label, timing.warmup + timing.duration);
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(Duration::from_nanos(now_ns() - start_ns).as_millis() as u64);
                sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let op = op.clone();
            let max = timing.max_messages;
            match shape {
                Shape::Closed { .. } => tokio::spawn(closed(worker, window, max, op)),
                Shape::Open { rate } => {
                    let interval = nanos(Duration::from_secs_f64(workers as f64 / rate.max(1e-3)));
                    let first = start_ns + interval * worker as u64 / workers.max(1) as u64;
                    tokio::spawn(open(worker, window, max, first, interval.max(1), op))
                }
            }
        })
        .collect();

    let mut total = Worker::default();
    for task in tasks {
        total.merge(task.await?);
    }
    ticker.abort();
    bar.finish_and_clear();
    let (before, after) = sampler.await?;
    Ok(Outcome {
        window,
        latency: total.latency,
        in_window: total.in_window,
        done: total.done,
        errors: total.errors,
        first_error: total.first_error,
        before,
        after,
    })
}

/// One worker's counts.
#[derive(Debug, Default)]
struct Worker {
    latency: Latency,
    in_window: u64,
    done: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Worker {
    fn finish(&mut self, window: &Window, started_ns: u64, result: Result<()>) {
        match result {
            Ok(()) => {
                self.done += 1;
                if window.contains(started_ns) {
                    self.in_window += 1;
                    self.latency.record_ns(started_ns, now_ns());
                }
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }

    fn merge(&mut self, other: Worker) {
        self.latency.merge(&other.latency);
        self.in_window += other.in_window;
        self.done += other.done;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

async fn closed<F, Fut>(worker: usize, window: Window, max: u64, op: F) -> Worker
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut counts = Worker::default();
    let mut iteration = 0;
    while iteration < max {
        let started = now_ns();
        if started >= window.end_ns {
            break;
        }
        let result = op(worker, iteration).await;
        counts.finish(&window, started, result);
        iteration += 1;
    }
    counts
}

async fn open<F, Fut>(
    worker: usize,
    window: Window,
    max: u64,
    first_ns: u64,
    interval_ns: u64,
    op: F,
) -> Worker
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut counts = Worker::default();
    let mut due = first_ns;
    let mut iteration = 0;
    while due < window.end_ns && iteration < max {
        sleep_until(instant_at(due).into()).await;
        // Timed from when it was due, not from when this worker got to it.
        let result = op(worker, iteration).await;
        counts.finish(&window, due, result);
        iteration += 1;
        due += interval_ns;
    }
    counts
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
