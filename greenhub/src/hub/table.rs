//! The hub's table of green threads: a slab (entries under small integer
//! keys, vacant ones chained for reuse, as in the `slab` crate) stored in
//! an [`AheadVec`], so that a million spawns seldom wait for a page fault.

use super::ahead::AheadVec;

pub(crate) struct Table<T> {
    entries: AheadVec<Entry<T>>,
    /// The first vacant key (`entries.len()` if none).
    next: usize,
    len: usize,
}

enum Entry<T> {
    /// The next vacant key.
    Vacant(usize),
    Occupied(T),
}

impl<T> Table<T> {
    pub(crate) fn new() -> Table<T> {
        Table {
            entries: AheadVec::new(),
            next: 0,
            len: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key the next `insert` takes.
    pub(crate) fn vacant_key(&self) -> usize {
        self.next
    }

    pub(crate) fn insert(&mut self, value: T) -> usize {
        let key = self.next;
        if key == self.entries.len() {
            self.entries.push(Entry::Occupied(value));
            self.next = key + 1;
        } else {
            match std::mem::replace(&mut self.entries[key], Entry::Occupied(value)) {
                Entry::Vacant(next) => self.next = next,
                Entry::Occupied(_) => unreachable!("the vacant chain holds vacant keys"),
            }
        }
        self.len += 1;
        key
    }

    /// Takes the value under `key` out. Panics if there is none.
    pub(crate) fn remove(&mut self, key: usize) -> T {
        let entry = self.entries.get_mut(key).expect("a key of this slab");
        match std::mem::replace(entry, Entry::Vacant(self.next)) {
            Entry::Occupied(value) => {
                self.next = key;
                self.len -= 1;
                value
            }
            vacant => {
                *entry = vacant;
                panic!("slab key {key} is vacant");
            }
        }
    }

    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        match self.entries.get(key) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    /// The occupied entries with their keys, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(key, entry)| match entry {
                Entry::Occupied(value) => Some((key, value)),
                Entry::Vacant(_) => None,
            })
    }

    /// Empties the slab, handing over its values in key order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> {
        self.next = 0;
        self.len = 0;
        self.entries
            .take()
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::Occupied(value) => Some(value),
                Entry::Vacant(_) => None,
            })
    }
}

impl<T> std::ops::Index<usize> for Table<T> {
    type Output = T;

    fn index(&self, key: usize) -> &T {
        self.get(key).expect("an occupied slab key")
    }
}

impl<T> std::ops::IndexMut<usize> for Table<T> {
    fn index_mut(&mut self, key: usize) -> &mut T {
        self.get_mut(key).expect("an occupied slab key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_last_freed_first() {
        let mut slab = Table::new();
        assert_eq!(slab.vacant_key(), 0);
        let a = slab.insert("a");
        let b = slab.insert("b");
        let c = slab.insert("c");
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(slab.remove(b), "b");
        assert_eq!(slab.remove(a), "a");
        assert_eq!(slab.vacant_key(), a);
        assert_eq!(slab.insert("d"), a);
        assert_eq!(slab.insert("e"), b);
        assert_eq!(slab.vacant_key(), 3);
        assert_eq!(slab.get(b), Some(&"e"));
        assert_eq!(slab.get(7), None);
        slab[c] = "f";
        let all: Vec<_> = slab.iter().collect();
        assert_eq!(all, [(0, &"d"), (1, &"e"), (2, &"f")]);
        assert!(!slab.is_empty());
        assert_eq!(slab.drain().collect::<Vec<_>>(), ["d", "e", "f"]);
        assert!(slab.is_empty());
        assert_eq!(slab.insert("g"), 0);
    }

    #[test]
    #[should_panic(expected = "vacant")]
    fn removing_a_vacant_key_panics() {
        let mut slab = Table::new();
        let a = slab.insert(1);
        slab.remove(a);
        slab.remove(a);
    }
}
