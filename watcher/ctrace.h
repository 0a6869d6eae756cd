/*
 * ctrace.h - the way of each API change to the data plane, for "ferry
 * explain --trace NAMESPACE/NAME" (README: ferry explain).
 *
 * Every Service or EndpointSlice event the watcher applies (ADDED or
 * MODIFIED) becomes one record, named by the Service it belongs to; the
 * stages after it fill the records in as the change moves on: the table
 * built from it (or found unchanged), the merged table posted to the
 * workers, the kernel rules committed. Each worker's own commit time is
 * not here: the workers remember their last commits (worker.h), and the
 * reader joins the two by generation.
 *
 * One fixed ring of CTRACE_RING records for the whole process, allocated
 * at the first record, so memory does not grow with the cluster; a
 * Service's records are found by scanning it backwards. Control loop
 * only: no locking.
 */
#ifndef WATCHER_CTRACE_H
#define WATCHER_CTRACE_H

#include <stddef.h>
#include <stdint.h>

#define CTRACE_RING    2048 /* records kept, all Services together */
#define CTRACE_PER_SVC 16   /* records one question returns, at most */
#define CTRACE_NAME    64   /* a namespace or name, NUL included */

enum ctrace_kind { CTRACE_SERVICE = 0, CTRACE_SLICE };
enum ctrace_kernel {
    CTRACE_KERNEL_NONE = 0, /* no kernel dataplane (or not built yet) */
    CTRACE_KERNEL_PENDING,  /* waiting for a transaction to succeed */
    CTRACE_KERNEL_DONE,     /* rules in force at <committed> */
};

/* Times are wall clock (Unix seconds); 0 means "not reached". */
struct ctrace_rec {
    uint64_t seq; /* 1, 2, ... in the order received */
    char ns[CTRACE_NAME];
    char svc[CTRACE_NAME];
    char obj[CTRACE_NAME]; /* the object's name, cut to fit */
    enum ctrace_kind kind;
    int modified;    /* CTRACE_ADDED, CTRACE_MODIFIED or CTRACE_DELETED */
    double trigger;  /* EndpointSlice last-change-trigger-time, or 0 */
    double received; /* the watch event applied to the cache */
    double built;    /* the translation that took it ended */
    int unchanged;   /* ... and found the table in force unchanged */
    uint64_t tgen;   /* the watcher's table generation */
    double posted;   /* merged, and the apply step began (it posts the
                      * plans to the workers) */
    uint64_t gen;    /* the merged table's generation (the workers') */
    int apply_failed;
    enum ctrace_kernel kernel;
    double committed;
};

/* A watch event for <kind> object <obj> of Service <ns>/<svc> (strings
 * borrowed; too long ones are cut) was applied at <now>, with the
 * trigger time <trigger> (0: none). */
/* The watch event a record is of (struct ctrace_rec.modified). */
#define CTRACE_ADDED    0
#define CTRACE_MODIFIED 1
#define CTRACE_DELETED  2

void ctrace_received(enum ctrace_kind kind, int modified, const char *ns,
                     const char *svc, const char *obj, double trigger,
                     double now);

/* A translation ended at <now>: every record not built yet went into
 * the table of watcher generation <tgen>, or, with <tgen> 0, changed
 * nothing. */
void ctrace_built(uint64_t tgen, double now);

/* The watcher's table <tgen>, merged as generation <gen>, went to the
 * apply step at <now>, which posted it to the workers (<ok> 0: the
 * apply failed). With <kernel> set,
 * the kernel dataplane is to take it too (ctrace_committed()). */
void ctrace_posted(uint64_t tgen, uint64_t gen, double now, int ok, int kernel);

/* A kernel transaction succeeded (or had nothing to do) at <now>: what
 * waited for it is in force. */
void ctrace_committed(double now);

/* Up to <max> records of Service <ns>/<name>, newest first, into <out>
 * (pointers into the ring, valid until the next record). Returns how
 * many. */
size_t ctrace_find(const char *ns, const char *name,
                   const struct ctrace_rec **out, size_t max);

/* Forget every record and free the ring (tests, shutdown). */
void ctrace_reset(void);

#endif
