//! Cursor pagination: `limit` items with an id above `after`, in ascending id order.

use crate::ValidationError;

/// Smallest and largest page a client may ask for, and the default.
pub const MIN_LIMIT: u32 = 1;
/// The largest page a client may ask for.
pub const MAX_LIMIT: u32 = 500;
/// The page size when a client asks for none.
pub const DEFAULT_LIMIT: u32 = 50;

/// A parsed page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    after: i64,
}

impl PageRequest {
    /// `limit` must be in 1..=500 (default 50); `after` must be >= 0 (default 0).
    pub fn parse(limit: Option<i64>, after: Option<i64>) -> Result<Self, ValidationError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) if (i64::from(MIN_LIMIT)..=i64::from(MAX_LIMIT)).contains(&l) => l as u32,
            Some(_) => {
                return Err(ValidationError::new(
                    "limit",
                    format!("must be between {MIN_LIMIT} and {MAX_LIMIT}"),
                ))
            }
        };
        let after = match after {
            None => 0,
            Some(a) if a >= 0 => a,
            Some(_) => return Err(ValidationError::new("after", "must be an id >= 0")),
        };
        Ok(Self { limit, after })
    }

    /// The first page of `limit` items (clamped to 1..=500).
    pub fn first(limit: u32) -> Self {
        Self {
            limit: limit.clamp(MIN_LIMIT, MAX_LIMIT),
            after: 0,
        }
    }

    /// Most items on the page.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Items have ids above this one.
    pub fn after(&self) -> i64 {
        self.after
    }

    /// Builds a page from up to `limit + 1` rows fetched in id order: the extra
    /// row only tells that another page exists.
    pub fn page_from<T>(&self, mut rows: Vec<T>, id_of: impl Fn(&T) -> i64) -> Page<T> {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next_after = if more { rows.last().map(id_of) } else { None };
        Page {
            items: rows,
            next_after,
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(DEFAULT_LIMIT)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The page's items, in ascending id order.
    pub items: Vec<T>,
    /// The `after` of the next page; `None` on the last page.
    pub next_after: Option<i64>,
}

impl<T> Page<T> {
    /// The same page with each item mapped by `f`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_after: self.next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_outside_1_to_500_is_refused() {
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(501), None).is_err());
        assert_eq!(
            PageRequest::parse(Some(500), None).map(|p| p.limit()),
            Ok(500)
        );
        assert_eq!(PageRequest::parse(None, None).map(|p| p.limit()), Ok(50));
        assert!(PageRequest::parse(None, Some(-1)).is_err());
    }

    #[test]
    fn extra_row_sets_next_after_to_last_item() {
        let req = PageRequest::parse(Some(2), None).expect("valid");
        let page = req.page_from(vec![3, 5, 9], |x| *x);
        assert_eq!(page.items, vec![3, 5]);
        assert_eq!(page.next_after, Some(5));
        let last = req.page_from(vec![3, 5], |x| *x);
        assert_eq!(last.next_after, None);
    }
}
