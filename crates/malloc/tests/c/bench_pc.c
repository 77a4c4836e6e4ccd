/* Producer/consumer benchmark: one thread allocates 64-byte objects and
 * passes them through a ring to another thread, which frees them (every
 * free is a remote free). Prints the time per object in nanoseconds.
 *
 * usage: bench_pc [objects]   (default 10,000,000) */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { RING = 4096 };
static _Atomic(void *) ring[RING];
static _Atomic size_t head, tail;
static size_t total;

static void *producer(void *arg) {
    (void)arg;
    for (size_t i = 0; i < total; i++) {
        void *p = malloc(64);
        if (!p)
            abort();
        *(volatile size_t *)p = i;
        size_t h = atomic_load_explicit(&head, memory_order_relaxed);
        while (h - atomic_load_explicit(&tail, memory_order_acquire) >= RING)
            sched_yield();
        atomic_store_explicit(&ring[h % RING], p, memory_order_relaxed);
        atomic_store_explicit(&head, h + 1, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    for (size_t i = 0; i < total; i++) {
        size_t t = atomic_load_explicit(&tail, memory_order_relaxed);
        while (atomic_load_explicit(&head, memory_order_acquire) == t)
            sched_yield();
        void *p = atomic_load_explicit(&ring[t % RING], memory_order_relaxed);
        atomic_store_explicit(&tail, t + 1, memory_order_release);
        if (*(volatile size_t *)p != i)
            abort();
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    total = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pthread_t p, c;
    pthread_create(&p, NULL, producer, NULL);
    pthread_create(&c, NULL, consumer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)total;
    printf("%.1f ns/object\n", ns);
    return 0;
}
