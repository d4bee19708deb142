//! Green-thread-local storage: [`green_local!`](crate::green_local) declares
//! a [`LocalKey`], and every green thread that touches it gets its own value,
//! as `thread_local!` gives every OS thread its own.
//!
//! ```
//! use std::cell::Cell;
//!
//! greenhub::green_local! {
//!     /// How many requests this green thread has served.
//!     static SERVED: Cell<u32> = Cell::new(0);
//! }
//!
//! greenhub::run(|| {
//!     let a = greenhub::spawn(|| {
//!         SERVED.set(SERVED.get() + 1);
//!         greenhub::yield_now(); // b runs here, with a value of its own
//!         SERVED.get()
//!     });
//!     let b = greenhub::spawn(|| {
//!         SERVED.set(SERVED.get() + 10);
//!         SERVED.get()
//!     });
//!     assert_eq!(a.join().unwrap(), 1);
//!     assert_eq!(b.join().unwrap(), 10);
//!     assert_eq!(SERVED.get(), 0, "main has its own value too");
//! })
//! .unwrap();
//! ```
//!
//! # Lifetime of a value
//!
//! - A value is made lazily, by the key's initialiser, the first time its
//!   green thread touches the key; a green thread that never does costs
//!   nothing.
//! - It is dropped when its green thread finishes, however it finishes:
//!   returning, panicking or killed. The values are dropped on the finishing
//!   green thread, after its links ([`JoinHandle::link`](crate::JoinHandle::link))
//!   have run, newest first. A destructor that panics is reported on stderr;
//!   the other values are still dropped. A destructor should not block (in a
//!   killed green thread a blocking call unwinds at once).
//! - Touching a key from a destructor of another key of the same green thread
//!   makes a new value, which is dropped in turn (for a few rounds; values
//!   still made after that are leaked, as std does with thread locals).
//!
//! # Outside a green thread
//!
//! Code that runs on a plain OS thread (outside `greenhub::run`, or on the
//! hub itself between green threads) gets one value per OS thread, exactly as
//! with `thread_local!`: it is dropped when the OS thread exits.
//!
//! # Cost
//!
//! A key is numbered on first use; each green thread's values sit in a small
//! vector indexed by that number, found through a hash map keyed by the green
//! thread's id. An access is two thread-local lookups, one hash and one index.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Declares green-thread-local statics, in the spirit of `thread_local!`:
/// each is a [`LocalKey`] whose value every green thread gets its own of.
///
/// ```
/// use std::cell::RefCell;
///
/// greenhub::green_local! {
///     static LOG: RefCell<Vec<String>> = RefCell::new(Vec::new());
///     /// Attributes and visibility are kept.
///     pub static DEPTH: std::cell::Cell<usize> = std::cell::Cell::new(0);
/// }
///
/// greenhub::run(|| {
///     LOG.with_borrow_mut(|log| log.push("main".into()));
///     greenhub::spawn(|| LOG.with_borrow(|log| assert!(log.is_empty())))
///         .join()
///         .unwrap();
///     assert_eq!(LOG.with_borrow(Vec::len), 1);
/// })
/// .unwrap();
/// ```
///
/// The initialiser is an expression evaluated on first use in each green
/// thread; like a `static`'s, it cannot refer to local variables.
#[macro_export]
macro_rules! green_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $crate::green_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::green_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $(#[$attr])*
        $vis static $name: $crate::local::LocalKey<$t> = {
            fn __green_local_init() -> $t {
                $init
            }
            $crate::local::LocalKey::new(__green_local_init)
        };
    };
}

/// A green-thread-local value, declared with
/// [`green_local!`](crate::green_local); see the [module docs](self).
pub struct LocalKey<T: 'static> {
    init: fn() -> T,
    /// The key's number plus one, given on first use (0: not yet).
    index: AtomicUsize,
}

/// The error of [`LocalKey::try_with`]: this OS thread's storage is being
/// torn down (the OS thread is exiting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessError(());

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("green-local value accessed while its OS thread is exiting")
    }
}

impl std::error::Error for AccessError {}

static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);

/// One owner's values, indexed by key number, and the order they were made
/// in (they are dropped in the reverse order).
#[derive(Default)]
struct Values {
    slots: Vec<Option<Owned>>,
    made: Vec<usize>,
}

impl Values {
    const fn new() -> Values {
        Values {
            slots: Vec::new(),
            made: Vec::new(),
        }
    }

    /// The values, newest first.
    fn into_newest_first(mut self) -> impl Iterator<Item = Owned> {
        let made = std::mem::take(&mut self.made);
        made.into_iter()
            .rev()
            .filter_map(move |index| self.slots[index].take())
    }
}

/// A value on the heap. Shared (`Rc`) so that `with` holds its own reference
/// while it lends the value out: whatever happens meanwhile to the owner's
/// vectors (they grow, the map rehashes), the value stays alive and in place.
type Owned = Rc<dyn Any>;

/// Green thread ids are unique counters: they need no mixing beyond a multiply.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

thread_local! {
    /// The values of the green threads of this OS thread's hub, by green id.
    static GREEN: RefCell<HashMap<u64, Values, BuildHasherDefault<IdHasher>>> =
        RefCell::new(HashMap::default());
    /// The values of code outside any green thread on this OS thread.
    static OS: RefCell<Values> = const { RefCell::new(Values::new()) };
    /// Whether any green thread of this OS thread ever had a value: until
    /// then, the end of a green thread skips `GREEN` altogether.
    static GREEN_USED: Cell<bool> = const { Cell::new(false) };
}

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    /// Used by [`green_local!`](crate::green_local).
    pub const fn new(init: fn() -> T) -> LocalKey<T> {
        LocalKey {
            init,
            index: AtomicUsize::new(0),
        }
    }

    /// Runs `f` with the current green thread's value, making it first if
    /// this green thread has none yet.
    ///
    /// # Panics
    /// If the OS thread is exiting (see [`try_with`](LocalKey::try_with)), and
    /// if the initialiser panics.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        match self.try_with(f) {
            Ok(r) => r,
            Err(e) => panic!("greenhub: {e}"),
        }
    }

    /// Like [`with`](LocalKey::with), but fails instead of panicking when the
    /// OS thread's storage is being destroyed.
    pub fn try_with<R>(&'static self, f: impl FnOnce(&T) -> R) -> Result<R, AccessError> {
        let index = self.index();
        let value = match crate::task::current_id() {
            Some(id) => self.green_value(id, index)?,
            None => self.os_value(index)?,
        };
        let value = value
            .downcast_ref::<T>()
            .expect("a key's values have its type");
        Ok(f(value))
    }

    fn index(&'static self) -> usize {
        let index = self.index.load(Ordering::Relaxed);
        if index != 0 {
            return index - 1;
        }
        let mine = NEXT_INDEX.fetch_add(1, Ordering::Relaxed) + 1;
        match self
            .index
            .compare_exchange(0, mine, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => mine - 1,
            Err(theirs) => theirs - 1,
        }
    }

    /// The green thread `id`'s value, made if missing.
    fn green_value(&'static self, id: u64, index: usize) -> Result<Owned, AccessError> {
        let lookup =
            |map: &HashMap<u64, Values, _>| map.get(&id).and_then(|values| find(values, index));
        let found = GREEN
            .try_with(|map| lookup(&map.borrow()))
            .map_err(|_| AccessError(()))?;
        if let Some(value) = found {
            return Ok(value);
        }
        // No borrow is held while the initialiser runs: it may use other
        // green locals, or park (and let other green threads use theirs).
        let fresh: Owned = Rc::new((self.init)());
        GREEN_USED.set(true);
        let (value, spare) = GREEN
            .try_with(|map| {
                let mut map = map.borrow_mut();
                let values = map.entry(id).or_default();
                store(values, index, fresh)
            })
            .map_err(|_| AccessError(()))?;
        drop(spare);
        Ok(value)
    }

    /// This OS thread's value, made if missing.
    fn os_value(&'static self, index: usize) -> Result<Owned, AccessError> {
        let found = OS
            .try_with(|values| find(&values.borrow(), index))
            .map_err(|_| AccessError(()))?;
        if let Some(value) = found {
            return Ok(value);
        }
        let fresh: Owned = Rc::new((self.init)());
        let (value, spare) = OS
            .try_with(|values| store(&mut values.borrow_mut(), index, fresh))
            .map_err(|_| AccessError(()))?;
        drop(spare);
        Ok(value)
    }
}

/// The value at `index`, if made.
fn find(values: &Values, index: usize) -> Option<Owned> {
    values.slots.get(index)?.clone()
}

/// Stores `fresh` at `index` unless a value got there first (the initialiser
/// touched its own key); returns the value kept, and `fresh` if it was not
/// (to be dropped by the caller, outside the borrow).
fn store(values: &mut Values, index: usize, fresh: Owned) -> (Owned, Option<Owned>) {
    if values.slots.len() <= index {
        values.slots.resize_with(index + 1, || None);
    }
    let spare = match &values.slots[index] {
        Some(_) => Some(fresh),
        None => {
            values.slots[index] = Some(fresh);
            values.made.push(index);
            None
        }
    };
    let value = find(values, index).expect("just stored");
    (value, spare)
}

/// How many times `finish` looks again for values made by destructors.
const FINISH_ROUNDS: usize = 4;

/// Drops the values of the finishing green thread `id` (task.rs calls this
/// at the end of its body, on the green thread).
pub(crate) fn finish(id: u64) {
    if !GREEN_USED.get() {
        return;
    }
    for _ in 0..FINISH_ROUNDS {
        let Ok(Some(values)) = GREEN.try_with(|map| take_values(&mut map.borrow_mut(), id)) else {
            return;
        };
        // Newest first: a value may use those made before it.
        for value in values.into_newest_first() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
                crate::hub::clear_unwinding();
                let why = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("<non-string payload>");
                crate::hub::warn(format_args!(
                    "greenhub: the destructor of a green-local value of green thread {id} \
                     panicked: {why}"
                ));
            }
        }
    }
    // Values still being made by destructors: leak them, as std does.
    if let Ok(Some(values)) = GREEN.try_with(|map| take_values(&mut map.borrow_mut(), id)) {
        std::mem::forget(values);
    }
}

/// Takes green thread `id`'s values out of the map; cheap when no green
/// thread has any (the common case at every green thread's end).
fn take_values(
    map: &mut HashMap<u64, Values, BuildHasherDefault<IdHasher>>,
    id: u64,
) -> Option<Values> {
    if map.is_empty() {
        return None;
    }
    map.remove(&id)
}

impl<T: 'static> LocalKey<Cell<T>> {
    /// Sets the current green thread's value.
    pub fn set(&'static self, value: T) {
        self.with(|cell| cell.set(value));
    }

    /// A copy of the current green thread's value.
    pub fn get(&'static self) -> T
    where
        T: Copy,
    {
        self.with(Cell::get)
    }

    /// Takes the current green thread's value, leaving `T::default()`.
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        self.with(Cell::take)
    }

    /// Replaces the current green thread's value; returns the old one.
    pub fn replace(&'static self, value: T) -> T {
        self.with(|cell| cell.replace(value))
    }
}

impl<T: 'static> LocalKey<RefCell<T>> {
    /// Runs `f` with a shared borrow of the current green thread's value.
    ///
    /// # Panics
    /// If the value is mutably borrowed.
    pub fn with_borrow<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.with(|cell| f(&cell.borrow()))
    }

    /// Runs `f` with a mutable borrow of the current green thread's value.
    ///
    /// # Panics
    /// If the value is borrowed.
    pub fn with_borrow_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R {
        self.with(|cell| f(&mut cell.borrow_mut()))
    }

    /// Sets the current green thread's value (a green thread that has none
    /// yet makes it with the initialiser first, then replaces it).
    pub fn set(&'static self, value: T) {
        self.with(|cell| *cell.borrow_mut() = value);
    }

    /// Takes the current green thread's value, leaving `T::default()`.
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        self.with(RefCell::take)
    }

    /// Replaces the current green thread's value; returns the old one.
    pub fn replace(&'static self, value: T) -> T {
        self.with(|cell| cell.replace(value))
    }
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").finish_non_exhaustive()
    }
}
