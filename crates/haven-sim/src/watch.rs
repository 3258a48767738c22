//! A watch channel whose wake-up order is fixed, for [`crate::runtime::SimRuntime`].
//!
//! tokio's `sync::watch` spreads waiting receivers over eight `Notify`s chosen with the
//! runtime's thread-local RNG, which is seeded from the OS unless tokio is built with
//! `--cfg tokio_unstable`. When several receivers wait on one channel (openraft's metrics,
//! the simulator's own observers) they would wake in a different order on each run, so
//! tasks would run in a different order and the same seed could give a different trace.
//! Here waiting receivers are woken in the order they were created.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::task::Poll;
use std::task::Waker;

use openraft_rt::watch::RecvError;
use openraft_rt::watch::SendError;
use openraft_rt::OptionalSend;
use openraft_rt::OptionalSync;
use openraft_rt::Watch;
use openraft_rt::WatchReceiver;
use openraft_rt::WatchSender;

/// The [`Watch`] implementation of the simulation runtime.
pub struct SimWatch;

struct Registry {
    /// Bumped on every notifying change; a receiver has seen the value when its own
    /// `seen` equals this.
    version: u64,
    senders: usize,
    receivers: usize,
    next_receiver_id: u64,
    /// Waiting receivers by id: a `BTreeMap`, so they are woken in creation order.
    waiters: BTreeMap<u64, Waker>,
}

struct Shared<T> {
    value: RwLock<T>,
    registry: Mutex<Registry>,
}

impl<T> Shared<T> {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain counters behind: still consistent.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_receiver(self: &Arc<Self>, registry: &mut Registry, seen: u64) -> SimWatchReceiver<T> {
        let id = registry.next_receiver_id;
        registry.next_receiver_id += 1;
        registry.receivers += 1;
        SimWatchReceiver { shared: self.clone(), id, seen }
    }

    /// Marks a change and wakes every waiting receiver, in creation order, after the lock
    /// is released (a woken task on this thread must not find the lock held).
    fn notify(&self) {
        let waiters = {
            let mut registry = self.registry();
            registry.version += 1;
            std::mem::take(&mut registry.waiters)
        };
        for waker in waiters.into_values() {
            waker.wake();
        }
    }
}

pub struct SimWatchSender<T> {
    shared: Arc<Shared<T>>,
}

pub struct SimWatchReceiver<T> {
    shared: Arc<Shared<T>>,
    id: u64,
    seen: u64,
}

impl<T> Clone for SimWatchSender<T> {
    fn clone(&self) -> Self {
        self.shared.registry().senders += 1;
        SimWatchSender { shared: self.shared.clone() }
    }
}

impl<T> Drop for SimWatchSender<T> {
    fn drop(&mut self) {
        let waiters = {
            let mut registry = self.shared.registry();
            registry.senders = registry.senders.saturating_sub(1);
            if registry.senders > 0 {
                return;
            }
            std::mem::take(&mut registry.waiters)
        };
        // The last sender is gone: waiting receivers learn that the channel closed.
        for waker in waiters.into_values() {
            waker.wake();
        }
    }
}

impl<T> Clone for SimWatchReceiver<T> {
    fn clone(&self) -> Self {
        let mut registry = self.shared.registry();
        self.shared.new_receiver(&mut registry, self.seen)
    }
}

impl<T> Drop for SimWatchReceiver<T> {
    fn drop(&mut self) {
        let mut registry = self.shared.registry();
        registry.receivers = registry.receivers.saturating_sub(1);
        registry.waiters.remove(&self.id);
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

impl Watch for SimWatch {
    type Sender<T: OptionalSend + OptionalSync> = SimWatchSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = SimWatchReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Self::Sender<T>, Self::Receiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(init),
            registry: Mutex::new(Registry {
                version: 0,
                senders: 1,
                receivers: 0,
                next_receiver_id: 0,
                waiters: BTreeMap::new(),
            }),
        });
        let receiver = {
            let mut registry = shared.registry();
            // The initial value counts as seen, as with tokio's channel.
            shared.new_receiver(&mut registry, 0)
        };
        (SimWatchSender { shared }, receiver)
    }
}

impl<T> WatchSender<SimWatch, T> for SimWatchSender<T>
where
    T: OptionalSend + OptionalSync,
{
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.shared.registry().receivers == 0 {
            return Err(SendError(value));
        }
        *self.shared.value.write().unwrap_or_else(|e| e.into_inner()) = value;
        self.shared.notify();
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut value = self.shared.value.write().unwrap_or_else(|e| e.into_inner());
            modify(&mut value)
        };
        if modified {
            self.shared.notify();
        }
        modified
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        read(&self.shared.value)
    }

    fn subscribe(&self) -> SimWatchReceiver<T> {
        let mut registry = self.shared.registry();
        let seen = registry.version;
        self.shared.new_receiver(&mut registry, seen)
    }
}

impl<T> WatchReceiver<SimWatch, T> for SimWatchReceiver<T>
where
    T: OptionalSend + OptionalSync,
{
    async fn changed(&mut self) -> Result<(), RecvError> {
        poll_fn(|cx| {
            let mut registry = self.shared.registry();
            if registry.version != self.seen {
                self.seen = registry.version;
                return Poll::Ready(Ok(()));
            }
            if registry.senders == 0 {
                return Poll::Ready(Err(RecvError(())));
            }
            registry.waiters.insert(self.id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        read(&self.shared.value)
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        // Value first, version second: a send in between can only make a later
        // `changed` return once too often, never miss a change.
        let value = read(&self.shared.value);
        self.seen = self.shared.registry().version;
        value
    }
}
