//! The kernel state meshcrypt wants (device addresses, routes, policy rules, MTU), the state it
//! reads back over rtnetlink, and the pure planner between them.
//!
//! The planner and the netlink executor arrive with the mesh issue; this crate holds the place the
//! architecture gives them so that the workspace layout is stable from the start.
