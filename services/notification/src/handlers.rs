//! The answers to `cmd.notification.*`: the signed-in user's own
//! notifications, a page at a time with the unread count, and marking one read.

use std::sync::Arc;

use emporium_nats::Routes;
use emporium_nats::rpc::internal;
use emporium_schemas::commands::notification::{
    ListNotifications, NotificationPage, NotificationView, ReadNotification,
};
use emporium_schemas::{CommandEnvelope, ErrorKind, ReplyError};

use crate::events::Notifier;
use crate::store::{self, Cursor};

/// Every notification command, bound to its answer.
pub fn routes(notifier: Arc<Notifier>) -> Routes<Notifier> {
    Routes::from_arc(notifier)
        .on(|s, c: CommandEnvelope<ListNotifications>| async move { s.list(&c).await })
        .on(|s, c: CommandEnvelope<ReadNotification>| async move { s.read(&c).await })
}

impl Notifier {
    async fn list(&self, command: &CommandEnvelope<ListNotifications>) -> Result<NotificationPage, ReplyError> {
        let user = command.signed_in()?.user_id;
        let query = &command.data;
        let limit = query.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ReplyError::invalid("limit", "must be from 1 to 100"));
        }
        let cursor = match &query.cursor {
            Some(text) => {
                Some(Cursor::decode(text).ok_or_else(|| ReplyError::invalid("cursor", "not a cursor we gave"))?)
            }
            None => None,
        };
        let mut items =
            store::list(&self.pool, user, query.unread_only, cursor, limit + 1).await.map_err(|e| internal(&e))?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|last| Cursor::after(last).encode())
        } else {
            None
        };
        let unread = store::unread(&self.pool, user).await.map_err(|e| internal(&e))?;
        Ok(NotificationPage { items, unread, next_cursor })
    }

    async fn read(&self, command: &CommandEnvelope<ReadNotification>) -> Result<NotificationView, ReplyError> {
        let user = command.signed_in()?.user_id;
        store::mark_read(&self.pool, command.data.notification_id, user, self.clock.now())
            .await
            .map_err(|e| internal(&e))?
            // Someone else's is as absent as one that never was.
            .ok_or_else(|| ReplyError::new(ErrorKind::NotFound, "no such notification"))
    }
}
