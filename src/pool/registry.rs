//! The tasks a pool's workers can run: a [`Registry`] built before the
//! pool forks (code cannot cross a pipe; the workers inherit it), and the
//! typed [`Task`] handle each registration returns.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::{self, AsBytes, Values};
use super::results::{MapResults, Results};
use super::wire::Wire;
use super::worker::{Batched, Typed};
use crate::error::{Error, Result};

/// A raw task: reads its argument's bytes, appends its result's bytes to
/// `out`, or returns an error message. It runs in a worker process. The
/// typed [`Registry::task`] is the usual way; this one is for tasks that
/// are about bytes.
pub type TaskFn = fn(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String>;

/// What a typed task returns: its result, or a `Result` whose error fails
/// that item alone (its message is the error's `Display`).
pub trait Outcome {
    /// The result's type.
    type Value: Wire;
    /// The result, or the item's error message.
    fn into_result(self) -> std::result::Result<Self::Value, String>;
}

impl<T: Wire> Outcome for T {
    type Value = T;
    #[inline]
    fn into_result(self) -> std::result::Result<T, String> {
        Ok(self)
    }
}

impl<T: Wire, E: fmt::Display> Outcome for std::result::Result<T, E> {
    type Value = T;
    #[inline]
    fn into_result(self) -> std::result::Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// A registered task that takes an `A` and returns an `R`: what
/// [`Registry::task`] gives back, and what [`Pool::map`](super::Pool::map)
/// and [`Pool::apply_async`](super::Pool::apply_async) take. A misspelt
/// handle is a compile error, and its types are checked where it is used.
/// It belongs to the registry that made it: a pool built from another one
/// refuses it.
pub struct Task<A, R> {
    registry: u64,
    func: u16,
    name: &'static str,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Task<A, R> {
    /// The name it was registered under (it names the task in
    /// [`TaskError`](super::TaskError)s).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<A, R> Clone for Task<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Task<A, R> {}

impl<A, R> fmt::Debug for Task<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Task<{}, {}>({:?})",
            std::any::type_name::<A>(),
            std::any::type_name::<R>(),
            self.name
        )
    }
}

/// How a worker runs a task's items.
#[derive(Clone)]
pub(crate) enum Runner {
    /// A [`TaskFn`], called through a pointer for each item.
    Bytes(TaskFn),
    /// A typed task: its whole batch loop is compiled for it.
    Typed(Arc<dyn Batched>),
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Runner::Bytes(_) => f.write_str("Runner::Bytes"),
            Runner::Typed(_) => f.write_str("Runner::Typed"),
        }
    }
}

/// Each registry's own number, so that a [`Task`] is used only with the
/// pool its registry went into.
static REGISTRIES: AtomicU64 = AtomicU64::new(1);

/// The tasks a pool's workers can run. Build it before the pool forks: the
/// workers inherit it.
///
/// ```
/// use posixkit::pool::Registry;
/// let mut registry = Registry::new();
/// let square = registry.task("square", |n: i64| n * n);
/// let checked = registry.task("checked", |n: i64| n.checked_mul(n).ok_or("overflow"));
/// let shout = registry.task("shout", |s: String| s.to_uppercase());
/// let sum = registry.task("sum", |(a, b): (u32, f64)| f64::from(a) + b);
/// # let _ = (square, checked, shout, sum);
/// ```
#[derive(Debug)]
pub struct Registry {
    id: u64,
    names: Vec<&'static str>,
    fns: Vec<Runner>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            id: REGISTRIES.fetch_add(1, Ordering::Relaxed),
            names: Vec::new(),
            fns: Vec::new(),
        }
    }

    /// Register `f` as a task called `name` (the name appears in error
    /// messages) and get its typed handle. `f` takes an `A` and returns an
    /// `R`, or a `Result<R, E>` whose `Err` fails that item alone; `A` and
    /// `R` are [`Wire`] types (numbers, `String`, `Vec<u8>`, tuples).
    /// A closure may capture what it needs: the workers inherit it.
    ///
    /// Each batch is decoded, run and encoded in a loop compiled for `f`,
    /// with no call through a pointer per item; arguments of a fixed width
    /// travel packed. An item that panics fails alone, and its worker lives
    /// on.
    ///
    /// # Panics
    /// When the registry already holds 65 536 tasks.
    pub fn task<A, O, F>(&mut self, name: &'static str, f: F) -> Task<A, O::Value>
    where
        A: Wire,
        O: Outcome + 'static,
        F: Fn(A) -> O + Send + Sync + 'static,
    {
        let func = self.push(name, Runner::Typed(Arc::new(Typed::new(f))));
        Task {
            registry: self.id,
            func,
            name,
            _types: PhantomData,
        }
    }

    /// Add a raw task under `name`, found by that name (the last one
    /// registered under it) when a pool is asked to run `name`.
    ///
    /// # Panics
    /// When the registry already holds 65 536 tasks.
    #[must_use]
    pub fn register(mut self, name: &'static str, f: TaskFn) -> Self {
        self.push(name, Runner::Bytes(f));
        self
    }

    fn push(&mut self, name: &'static str, runner: Runner) -> u16 {
        let func = u16::try_from(self.fns.len()).expect("a registry holds at most 65 536 tasks");
        self.names.push(name);
        self.fns.push(runner);
        func
    }

    /// The task registered last under `name`.
    fn by_name(&self, name: &str) -> Result<(u16, &'static str)> {
        self.names
            .iter()
            .rposition(|n| *n == name)
            .map(|i| (i as u16, self.names[i]))
            .ok_or_else(|| Error::invalid("task", format!("no task named '{name}' is registered")))
    }

    /// `task`'s number here, if it was made by this registry.
    fn check<A, R>(&self, task: Task<A, R>) -> Result<(u16, &'static str)> {
        if task.registry != self.id || usize::from(task.func) >= self.fns.len() {
            return Err(Error::invalid(
                "task",
                format!(
                    "task '{}' was registered in another registry than this pool's",
                    task.name
                ),
            ));
        }
        Ok((task.func, task.name))
    }

    /// How to run task number `func`.
    pub(crate) fn runner(&self, func: u16) -> Option<&Runner> {
        self.fns.get(usize::from(func))
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A tuple of [`Wire`] values: the arguments [`Pool::starmap`](super::Pool::starmap)
/// takes, one tuple per call.
pub trait Tuple: Wire + sealed::Sealed {}

macro_rules! tuples {
    ($(($($t:ident),+)),*) => {$(
        impl<$($t: Wire),+> sealed::Sealed for ($($t,)+) {}
        impl<$($t: Wire),+> Tuple for ($($t,)+) where ($($t,)+): Wire {}
    )*};
}
tuples!(
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

impl sealed::Sealed for &str {}
impl<A, R> sealed::Sealed for Task<A, R> {}

/// What [`Pool::map`](super::Pool::map) and
/// [`Pool::apply_async`](super::Pool::apply_async) run on arguments of type
/// `A`: a [`Task<A, R>`] handle (results of type `R`), or, for raw tasks
/// ([`Registry::register`]), the task's name with arguments that are bytes
/// (results are bytes).
pub trait Target<A>: Copy + sealed::Sealed {
    /// One item's result.
    type Output: Wire;
    /// What `map` returns.
    type Results: Default + fmt::Debug;
    /// The task's number in `registry` and its name.
    #[doc(hidden)]
    fn resolve(self, registry: &Registry) -> Result<(u16, &'static str)>;
    /// Encode a task frame for `args`; the item count.
    #[doc(hidden)]
    fn encode(frame: &mut Vec<u8>, id: u64, func: u16, args: &[A]) -> Result<u32>;
    /// The raw results inside `results`.
    #[doc(hidden)]
    fn raw(results: &mut Self::Results) -> &mut MapResults;
}

impl<A: Wire, R: Wire> Target<A> for Task<A, R> {
    type Output = R;
    type Results = Results<R>;
    #[inline]
    fn resolve(self, registry: &Registry) -> Result<(u16, &'static str)> {
        registry.check(self)
    }
    #[inline]
    fn encode(frame: &mut Vec<u8>, id: u64, func: u16, args: &[A]) -> Result<u32> {
        frame::encode_task::<Values<A>>(frame, id, func, args)
    }
    #[inline]
    fn raw(results: &mut Results<R>) -> &mut MapResults {
        results.raw_mut()
    }
}

impl<B: AsRef<[u8]>> Target<B> for &str {
    type Output = Vec<u8>;
    type Results = MapResults;
    fn resolve(self, registry: &Registry) -> Result<(u16, &'static str)> {
        registry.by_name(self)
    }
    fn encode(frame: &mut Vec<u8>, id: u64, func: u16, args: &[B]) -> Result<u32> {
        frame::encode_task::<AsBytes<B>>(frame, id, func, args)
    }
    fn raw(results: &mut MapResults) -> &mut MapResults {
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_works_only_with_its_own_registry() {
        let mut mine = Registry::new();
        let mut other = Registry::new();
        let square = mine.task("square", |n: i64| n * n);
        let _ = other.task("square", |n: i64| n * n);
        assert_eq!(square.resolve(&mine).unwrap(), (0, "square"));
        let e = square.resolve(&other).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("another registry"), "{e}");
    }

    #[test]
    fn names_find_the_last_task_registered_under_them() {
        fn a(_: &[u8], _: &mut Vec<u8>) -> std::result::Result<(), String> {
            Ok(())
        }
        let mut reg = Registry::new().register("x", a).register("y", a);
        let typed = reg.task("x", |n: u8| n);
        assert_eq!(Target::<&[u8]>::resolve("x", &reg).unwrap().0, 2);
        assert_eq!(Target::<&[u8]>::resolve("y", &reg).unwrap().0, 1);
        assert_eq!(typed.resolve(&reg).unwrap().0, 2);
        let e = Target::<&[u8]>::resolve("z", &reg).unwrap_err();
        assert_eq!(e.to_string(), "task: no task named 'z' is registered");
    }

    #[test]
    fn a_task_returns_a_value_or_a_result() {
        assert_eq!(7i64.into_result(), Ok(7));
        assert_eq!(Err::<u8, _>("no").into_result(), Err("no".to_string()));
        let mut reg = Registry::new();
        let t: Task<u8, String> = reg.task("t", |n: u8| format!("{n}"));
        assert_eq!(format!("{t:?}"), "Task<u8, alloc::string::String>(\"t\")");
    }
}
