//! Payment sessions (capability 1, in progress): the server decides how the purchase app loads the
//! payment UI (the payment app in the foreground, a simulated sheet while it loads behind, or
//! simulated interfaces alone) and, once sessions are created and confirmed here, moves the money
//! once whichever process confirms. What lands first is the decision: `policy`.

pub mod policy;
