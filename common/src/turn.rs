//! Work deferred to the end of a runtime's turn: each current-thread runtime has one
//! task that runs, in one go, every item handed to it since its last run. It is woken
//! by the first item, so it runs after the tasks that were ready before it: the writes
//! that many tasks made ready in one turn go out together.
//!
//! Why (bench/README.md, issue 21, twelfth pass): a write to a loopback peer wakes the
//! peer's process; written one by one as each task makes them, nearly every write wakes
//! it, and the kernel's wake-up work costs more than the write. Written together, one
//! wake-up serves many. The gateway defers its requests to instances
//! (`hotel_upstream`'s HTTP/1.1 client) and its answers to clients (`WriteBehind`).
//!
//! Only on current-thread runtimes (the gateway's workers); elsewhere [`defer`] gives
//! the item back and the caller does the work at once.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};
use tokio::runtime::{Handle, RuntimeFlavor};

/// Work for the end of the turn.
pub trait Turn: Send + Sync {
    /// Does the work. `orphaned`: nothing but the queue holds the item any more (its
    /// owner was dropped meanwhile).
    fn run(&self, orphaned: bool);
}

/// Locks `m`, whether or not a holder panicked (the data is plain state, never left
/// half-written).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A runtime's queue.
struct Queue(Mutex<Pending>);

struct Pending {
    items: Vec<Arc<dyn Turn>>,
    /// The queue's task, while it waits for items.
    waker: Option<Waker>,
    /// The queue's task is gone (its runtime shut down): items queued now would wait
    /// forever.
    gone: bool,
}

thread_local! {
    /// The queue of the current-thread runtime last seen on this thread.
    static QUEUE: RefCell<Option<(tokio::runtime::Id, Arc<Queue>)>> = const { RefCell::new(None) };
}

/// Hands `item` to the current runtime's queue, starting the queue's task on first use.
/// Gives it back when the current runtime is not a current-thread one, or there is none.
///
/// # Errors
///
/// `item` itself, to be run at once by the caller.
pub fn defer(item: Arc<dyn Turn>) -> Result<(), Arc<dyn Turn>> {
    let Ok(rt) = Handle::try_current() else {
        return Err(item);
    };
    if rt.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return Err(item);
    }
    let id = rt.id();
    QUEUE.with_borrow_mut(|here| {
        if let Some((at, queue)) = here.as_ref()
            && *at == id
        {
            let mut p = lock(&queue.0);
            if !p.gone {
                p.items.push(item);
                if let Some(w) = p.waker.take() {
                    w.wake();
                }
                return Ok(());
            }
        }
        let queue = Arc::new(Queue(Mutex::new(Pending {
            items: vec![item],
            waker: None,
            gone: false,
        })));
        drop(rt.spawn(Runner {
            queue: queue.clone(),
            batch: Vec::new(),
        }));
        *here = Some((id, queue));
        Ok(())
    })
}

/// The queue's task.
struct Runner {
    queue: Arc<Queue>,
    batch: Vec<Arc<dyn Turn>>,
}

impl Future for Runner {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            {
                let mut p = lock(&this.queue.0);
                std::mem::swap(&mut p.items, &mut this.batch);
                if this.batch.is_empty() {
                    if !p.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        p.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
            for item in this.batch.drain(..) {
                item.run(Arc::strong_count(&item) == 1);
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let mut p = lock(&self.queue.0);
        p.gone = true;
        p.items.clear();
    }
}
