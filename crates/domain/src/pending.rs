//! The answer of a hot port: ready at once when the adapter can answer from
//! memory (a cache hit costs no allocation and no wake-up), a boxed future
//! when it has to ask its store.

use std::future::{Future, Ready};

use futures_util::future::{BoxFuture, Either};

/// A port's answer, awaited like any future.
pub type Pending<T> = Either<Ready<T>, BoxFuture<'static, T>>;

/// An answer known now.
pub fn ready<T>(value: T) -> Pending<T> {
    Either::Left(std::future::ready(value))
}

/// An answer the store gives later.
pub fn later<T>(answer: impl Future<Output = T> + Send + 'static) -> Pending<T> {
    Either::Right(Box::pin(answer))
}

/// Polls `f` once: the answer of a future the test's mocks make ready at
/// once (their `later` futures are ready on their first poll too).
#[cfg(test)]
pub(crate) fn poll_ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("a mocked store is never pending"),
    }
}
