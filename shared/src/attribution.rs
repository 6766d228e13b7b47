//! Attribution of conversions to campaign touches (issue 14), advanced incrementally by the
//! rollup job. The work is SQL (`advance_attribution`, migration V19) so the `rollup` timer and
//! pg_cron (`CALL run_rollups()`) run the same thing; the rules are documented there and in the
//! README ("Campaigns").

use serde::Serialize;
use std::fmt;
use tokio_postgres::Client;

/// What one attribution advance did.
#[derive(Debug, Clone, Serialize)]
pub struct Advance {
    /// The window of event ids read: `(window_start, window_end]`; empty when equal.
    pub window_start: i64,
    pub window_end: i64,
    /// Touches stored from the window.
    pub touches: i64,
    /// Conversions whose attribution was computed (new ones and ones a late event changed).
    pub conversions: i64,
    pub milliseconds: f64,
}

impl fmt::Display for Advance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.window_end == self.window_start {
            return write!(
                f,
                "attribution: nothing new after event {} ({:.1} ms)",
                self.window_start, self.milliseconds
            );
        }
        write!(
            f,
            "attribution: events ({}, {}]: {} touches, {} conversions attributed, {:.1} ms",
            self.window_start, self.window_end, self.touches, self.conversions, self.milliseconds
        )
    }
}

impl Advance {
    /// This window followed by the next one, as one: the span of both, their counts added.
    pub fn then(self, next: Advance) -> Advance {
        Advance {
            window_start: self.window_start,
            window_end: next.window_end,
            touches: self.touches + next.touches,
            conversions: self.conversions + next.conversions,
            milliseconds: self.milliseconds + next.milliseconds,
        }
    }
}

/// Advances attribution over at most `rollup_state.max_window_events` event ids committed
/// since its watermark, in one transaction.
pub async fn advance(client: &mut Client) -> Result<Advance, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            "SELECT window_start, window_end, touches_added, conversions_attributed, \
             milliseconds FROM advance_attribution()",
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(Advance {
        window_start: row.try_get(0)?,
        window_end: row.try_get(1)?,
        touches: row.try_get(2)?,
        conversions: row.try_get(3)?,
        milliseconds: row.try_get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_window_says_so() {
        let a = Advance {
            window_start: 9,
            window_end: 9,
            touches: 0,
            conversions: 0,
            milliseconds: 0.25,
        };
        assert_eq!(
            a.to_string(),
            "attribution: nothing new after event 9 (0.2 ms)"
        );
    }
}
