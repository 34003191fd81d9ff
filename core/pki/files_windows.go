package pki

// Windows has no FIFOs that open would wait on.
const openNonblock = 0

// Windows cannot open a folder to sync it.
const canSyncDir = false
