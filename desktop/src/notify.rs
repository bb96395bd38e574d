//! Desktop notifications over D-Bus (`org.freedesktop.Notifications`), on the zbus the
//! tray already uses for its StatusNotifierItem.

use std::collections::HashMap;

use crate::view::Notice;

/// Shows `notice`; an error when no notification service answers (no desktop session).
pub fn show(connection: &zbus::blocking::Connection, notice: &Notice) -> zbus::Result<u32> {
    let hints: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::new();
    let reply = connection.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &(
            "cairn",
            0u32,
            "emblem-synchronizing",
            notice.summary.as_str(),
            notice.body.as_str(),
            Vec::<&str>::new(),
            hints,
            8_000i32,
        ),
    )?;
    reply.body().deserialize()
}
