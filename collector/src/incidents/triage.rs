//! What the survivor of a merge takes from the incident it absorbs, decided here for
//! both the engine (in memory) and the store (on disk): each triage field (assignee,
//! classification, determination) only where the survivor has none, and "in
//! progress" over "active". No triage is lost, and the next incident a bridge reaches
//! is judged against the survivor as it then is.

use crate::model::incident::Status;

/// Takes `absorbed`'s value into `survivor` when the survivor has none; says whether it did.
pub fn take_missing<T: Clone>(survivor: &mut Option<T>, absorbed: Option<&T>) -> bool {
    match (survivor.is_none(), absorbed) {
        (true, Some(value)) => {
            *survivor = Some(value.clone());
            true
        }
        _ => false,
    }
}

/// The survivor's status after absorbing an incident of status `absorbed`.
pub fn merged_status(survivor: Status, absorbed: Status) -> Status {
    if survivor == Status::Active && absorbed == Status::InProgress {
        Status::InProgress
    } else {
        survivor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_survivor_keeps_its_own_and_takes_what_it_lacks() {
        let mut mine = None;
        assert!(take_missing(&mut mine, Some(&"eve")));
        assert_eq!(mine, Some("eve"));
        assert!(!take_missing(&mut mine, Some(&"bob")), "its own assignee stays");
        assert_eq!(mine, Some("eve"));
        assert!(!take_missing(&mut mine, None));
        assert_eq!(merged_status(Status::Active, Status::InProgress), Status::InProgress);
        assert_eq!(merged_status(Status::InProgress, Status::Active), Status::InProgress);
        assert_eq!(merged_status(Status::Active, Status::Resolved), Status::Active);
    }
}
