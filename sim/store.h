/* store.h — the simulator's RpcStore: an in-memory key-value store shared by
 * the world's workers, answering at once (no simulated latency).  Waiters
 * are woken in the order they started waiting. */
#ifndef SIM_STORE_H
#define SIM_STORE_H

#include "core/store.h"

G_BEGIN_DECLS

typedef struct SimStore SimStore;

SimStore *sim_store_new(void);
void sim_store_free(SimStore *s);
RpcStore *sim_store_base(SimStore *s);

G_END_DECLS

#endif /* SIM_STORE_H */
