//! The thread that owns the SQLite connection.
//!
//! Async callers must never block on SQLite, and a connection must not be
//! used from two threads at once. A single thread that owns the connection
//! solves both: callers queue closures on a channel and await each answer
//! on its own oneshot, while the thread runs the closures one at a time, in
//! the order they were queued.

use std::sync::mpsc;
use std::thread;

use chat_service::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// A call queued for the connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The handle to the connection's thread.
#[derive(Debug)]
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
    /// Answers once the thread has closed the connection.
    closed: oneshot::Receiver<Result<(), StoreError>>,
}

impl Worker {
    /// Starts the thread that owns `conn` from now on.
    pub(crate) fn spawn(conn: Connection) -> Result<Worker, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (report, closed) = oneshot::channel();
        thread::Builder::new()
            .name("chat-sqlite".into())
            .spawn(move || serve(conn, queue, report))
            .map_err(StoreError::backend)?;
        Ok(Worker { jobs, closed })
    }

    /// Runs `job` on the connection and returns its result.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have given up waiting; its answer is then moot.
            let _ = reply.send(job(conn));
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Lets the queued jobs finish, then waits for the connection to close.
    pub(crate) async fn close(self) -> Result<(), StoreError> {
        let Worker { jobs, closed } = self;
        drop(jobs);
        closed.await.map_err(|_| stopped())?
    }
}

/// The thread's loop: runs jobs until every sender is gone.
fn serve(
    mut conn: Connection,
    queue: mpsc::Receiver<Job>,
    report: oneshot::Sender<Result<(), StoreError>>,
) {
    for job in queue {
        job(&mut conn);
    }
    let result = conn.close().map_err(|(_, err)| StoreError::backend(err));
    if let Err(err) = &result {
        tracing::error!(%err, "closing the SQLite database failed");
    }
    // Nobody waits for the report when the store was dropped, not closed.
    let _ = report.send(result);
}

/// The error of a call made after the thread ended, which only a panic in a
/// job can cause while the store exists.
fn stopped() -> StoreError {
    StoreError::Backend("the SQLite store's thread has stopped".into())
}
