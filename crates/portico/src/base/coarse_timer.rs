//! Deadlines that may fire up to [`TICK`] late, for waits that most requests never reach (the 200 ms
//! after which a slow call gets a resumable stream, the time limit on a target's `initialize`).
//!
//! A tokio timer costs each request an entry in the runtime's timer wheel and, when it is the
//! earliest deadline (as a 200 ms one is on a worker whose other timers are seconds away), a wake-up
//! of the worker's event loop: a write to its eventfd and one more `epoll_wait`, on the request's
//! path before the target is even sent to. Here each worker thread keeps the waiting futures in a
//! list, and one tokio timer per worker, running only while the list is not empty, wakes the due ones
//! every [`TICK`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use tokio::time::Instant;

/// How late a deadline may fire.
pub const TICK: Duration = Duration::from_millis(50);

/// Completes once `delay` has passed (up to [`TICK`] later). Must be polled inside a tokio runtime;
/// outside a single-threaded one (where a task may move to another thread) it is a tokio timer.
pub fn after(delay: Duration) -> After {
    After {
        delay,
        state: State::New,
    }
}

/// `future`'s output, or `Err(Elapsed)` once `limit` has passed (up to [`TICK`] later).
pub fn timeout<F: Future>(limit: Duration, future: F) -> Timeout<F> {
    Timeout {
        future: Box::pin(future),
        deadline: after(limit),
    }
}

/// The future of [`timeout`].
pub struct Timeout<F> {
    /// Boxed once, and polled where it lies: a target's connection is a large future, which an
    /// `async fn` around it would copy at each move (measured: +49 % instructions per session).
    future: Pin<Box<F>>,
    deadline: After,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(output) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(&mut self.deadline).poll(cx).map(|()| Err(Elapsed))
    }
}

/// The time limit of [`timeout`] passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// The future of [`after`].
#[derive(Debug)]
pub struct After {
    delay: Duration,
    state: State,
}

#[derive(Debug)]
enum State {
    New,
    /// In the list of this thread, at this slot.
    Listed(ThreadId, usize),
    Tokio(Pin<Box<tokio::time::Sleep>>),
    Done,
}

impl Future for After {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match &mut this.state {
            State::Done => return Poll::Ready(()),
            State::Tokio(sleep) => return sleep.as_mut().poll(cx),
            State::New | State::Listed(..) => {}
        }
        let thread = std::thread::current().id();
        let listed = match this.state {
            State::Listed(on, slot) if on == thread => {
                WAITING.with(|list| list.borrow_mut().poll(slot, cx.waker()))
            }
            State::New if single_threaded() => {
                let due = Instant::now() + this.delay;
                Some(WAITING.with(|list| list.borrow_mut().insert(due, cx.waker())))
            }
            // A runtime whose tasks move between threads, or a future moved to another thread since
            // it was listed (sent from one runtime to another, which Portico does not do; its slot
            // on the first thread is woken when due and kept until that thread ends).
            _ => return this.poll_tokio(cx),
        };
        match listed {
            Some(slot) => {
                this.state = State::Listed(thread, slot);
                Poll::Pending
            }
            None => {
                this.state = State::Done;
                Poll::Ready(())
            }
        }
    }
}

impl After {
    /// A tokio timer from here on.
    fn poll_tokio(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut sleep = Box::pin(tokio::time::sleep(self.delay));
        let polled = sleep.as_mut().poll(cx);
        self.state = State::Tokio(sleep);
        polled
    }
}

impl Drop for After {
    fn drop(&mut self) {
        let State::Listed(thread, slot) = self.state else {
            return;
        };
        if thread != std::thread::current().id() {
            return;
        }
        // `try_with`: a future dropped while the thread's locals are torn down has nothing to remove.
        let _ = WAITING.try_with(|list| list.borrow_mut().remove(slot));
    }
}

/// Whether this thread runs a single-threaded tokio runtime (Portico's workers), whose tasks stay
/// on it.
fn single_threaded() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
    })
}

thread_local! {
    static WAITING: RefCell<Waiting> = RefCell::new(Waiting::default());
}

/// The futures waiting on this thread.
#[derive(Default)]
struct Waiting {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Whether this thread's ticking task is running.
    ticking: bool,
}

struct Slot {
    due: Instant,
    waker: Waker,
    /// Set by the tick that found it due; the future completes at its next poll.
    fired: bool,
}

impl Waiting {
    fn insert(&mut self, due: Instant, waker: &Waker) -> usize {
        let slot = Slot {
            due,
            waker: waker.clone(),
            fired: false,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        if !self.ticking {
            self.ticking = true;
            tokio::spawn(tick());
        }
        index
    }

    /// `None` once the slot has fired (and is freed); else keeps the latest waker.
    fn poll(&mut self, index: usize, waker: &Waker) -> Option<usize> {
        let slot = self.slots.get_mut(index)?.as_mut()?;
        if slot.fired {
            self.remove(index);
            return None;
        }
        slot.waker.clone_from(waker);
        Some(index)
    }

    fn remove(&mut self, index: usize) {
        if let Some(slot @ Some(_)) = self.slots.get_mut(index) {
            *slot = None;
            self.free.push(index);
        }
    }

    /// Marks the futures due by `now` as fired: their wakers, and whether any is left waiting.
    fn fire(&mut self, now: Instant) -> (Vec<Waker>, bool) {
        let (mut due, mut waiting) = (Vec::new(), false);
        for slot in self.slots.iter_mut().flatten() {
            if slot.fired {
                continue;
            }
            if slot.due <= now {
                slot.fired = true;
                due.push(slot.waker.clone());
            } else {
                waiting = true;
            }
        }
        if !waiting {
            // Fired slots are freed by their futures' next poll or drop; none is waiting on the tick.
            self.ticking = false;
        }
        (due, waiting)
    }
}

/// Wakes this thread's due futures every [`TICK`] while any is waiting.
fn tick() -> impl Future<Output = ()> + Send + 'static {
    // Dropped with the task, also when its runtime shuts down first (even before its first poll): a
    // later runtime on this thread starts its own.
    struct Ticking;
    impl Drop for Ticking {
        fn drop(&mut self) {
            let _ = WAITING.try_with(|list| list.borrow_mut().ticking = false);
        }
    }
    let ticking = Ticking;
    async move {
        let _ticking = ticking;
        tick_while_waiting().await;
    }
}

async fn tick_while_waiting() {
    loop {
        tokio::time::sleep(TICK).await;
        let (due, waiting) = WAITING.with(|list| list.borrow_mut().fire(Instant::now()));
        // Woken with the list released: a waker may run code that polls or drops a deadline.
        due.into_iter().for_each(Waker::wake);
        if !waiting {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticking() -> bool {
        WAITING.with(|list| list.borrow().ticking)
    }

    fn listed() -> usize {
        WAITING.with(|list| list.borrow().slots.iter().flatten().count())
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_fires_after_its_delay_and_within_a_tick() {
        let started = Instant::now();
        after(Duration::from_millis(200)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited <= Duration::from_millis(200) + TICK, "{waited:?}");
        assert_eq!(listed(), 0, "the fired deadline left the list");
        tokio::time::sleep(TICK * 2).await;
        assert!(!ticking(), "the tick stops when nothing waits");
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_fire_in_order_and_a_dropped_one_leaves_the_list() {
        let started = Instant::now();
        let dropped = tokio::spawn(after(Duration::from_millis(120)));
        let (short, long) = (
            after(Duration::from_millis(100)),
            after(Duration::from_millis(300)),
        );
        tokio::pin!(short, long);
        tokio::task::yield_now().await;
        dropped.abort();
        let _ = dropped.await;
        tokio::select! {
            () = &mut short => {}
            () = &mut long => panic!("the longer deadline fired first"),
        }
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(listed(), 1, "only the longer deadline waits");
        long.await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(listed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_gives_the_output_or_elapsed() {
        let quick = timeout(Duration::from_secs(1), async { 7 }).await;
        assert_eq!(quick, Ok(7));
        let slow = timeout(
            Duration::from_millis(100),
            tokio::time::sleep(Duration::from_secs(5)),
        );
        assert_eq!(slow.await, Err(Elapsed));
        assert_eq!(listed(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_runtime_whose_tasks_move_it_is_a_tokio_timer() {
        let started = Instant::now();
        let waited = tokio::spawn(async move {
            after(Duration::from_millis(20)).await;
            started.elapsed()
        });
        assert!(waited.await.unwrap() >= Duration::from_millis(20));
        assert_eq!(listed(), 0, "nothing listed on this thread");
    }

    #[test]
    fn a_runtime_shut_down_while_ticking_does_not_stop_the_next_ones() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let first = runtime();
        first.block_on(async {
            let waiting = after(Duration::from_secs(60));
            tokio::pin!(waiting);
            assert!(futures::poll!(&mut waiting).is_pending());
            // The runtime shuts down with the tick's task in it.
            assert!(ticking());
        });
        drop(first);
        assert!(!ticking(), "the tick's task was dropped with its runtime");
        runtime().block_on(after(Duration::from_millis(100)));
    }
}
