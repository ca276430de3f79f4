//! Consumer group coordinator (classic protocol): see groups/ for the contract.
