//! The glommio seam: the only module that touches O_DIRECT files and executor set-up facts.
//! Stand-in: filled in with the engine (probe workaround, memlock check, aligned buffer pool).
