//! Which public types may cross OS threads. Green threads never move between
//! OS threads, so their handles must not be `Send`; the `sync` primitives are
//! shared with other threads and hubs, so they must be `Send + Sync`.
//!
//! "Must not" is checked at compile time without dependencies, with the trick
//! behind `static_assertions::assert_not_impl_any!`: a method call that is
//! ambiguous exactly when the type implements the trait.

use std::rc::Rc;

use greenhub::sync::{AsyncResult, Event};
use greenhub::{Builder, Elapsed, Error, GreenId, GreenThread, HubBuilder, JoinError, JoinHandle};

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}

/// `<T as NotSend<_>>::check()` compiles only if `T` is not `Send`.
trait NotSend<A> {
    fn check() {}
}
impl<T: ?Sized> NotSend<()> for T {}
impl<T: ?Sized + Send> NotSend<u8> for T {}

/// `<T as NotSync<_>>::check()` compiles only if `T` is not `Sync`.
trait NotSync<A> {
    fn check() {}
}
impl<T: ?Sized> NotSync<()> for T {}
impl<T: ?Sized + Sync> NotSync<u8> for T {}

#[test]
fn shared_types_are_send_and_sync() {
    is_send::<Event>();
    is_sync::<Event>();
    is_send::<AsyncResult<String>>();
    is_sync::<AsyncResult<String>>();
    is_send::<GreenId>();
    is_sync::<GreenId>();
    is_send::<Builder>();
    is_sync::<Builder>();
    is_send::<HubBuilder>();
    is_sync::<HubBuilder>();
    is_send::<Elapsed>();
    is_sync::<Elapsed>();
    is_send::<Error>();
    is_sync::<Error>();
    is_send::<JoinError>();
}

#[test]
fn green_thread_handles_stay_on_their_os_thread() {
    <JoinHandle<()> as NotSend<_>>::check();
    <JoinHandle<()> as NotSync<_>>::check();
    <GreenThread as NotSend<_>>::check();
    <GreenThread as NotSync<_>>::check();
    // A result of a non-Send value cannot be handed to another thread.
    <AsyncResult<Rc<u8>> as NotSend<_>>::check();
    <AsyncResult<Rc<u8>> as NotSync<_>>::check();
}
