/* The C test of bsa-malloc: run with LD_PRELOAD=libbsa_malloc.so (and, for
 * comparison, without it: every check holds on glibc too, except the
 * bsa-only checks, which run with BSA_TEST_BSA=1 because glibc
 * aborts on those frees).
 *
 * Prints "ok <section>" per section; exits 0 when everything held. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);       \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

/* BSA_TEST_BSA=1: running on bsa-malloc; also check what only bsa does
 * (refusing misuse, glibc 2.38's aligned_alloc rule). */
static int on_bsa;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
static double t0;
static void ok(const char *what) {
    double t = now();
    printf("ok %s\n", what);
    if (getenv("BSA_TEST_TIMES"))
        fprintf(stderr, "%s: %.3f s\n", what, t - t0);
    t0 = t;
}

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Fill / check the first n bytes of an object with a pattern keyed by key
 * (not by the address: realloc moves objects). */
static void fillk(void *p, size_t n, size_t key) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(key * 131 + i);
}
static int intactk(const void *p, size_t n, size_t key) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(key * 131 + i))
            return 0;
    return 1;
}
#define fill(p, n) fillk((p), (n), (n))
#define intact(p, n) intactk((p), (n), (n))

static void basics(void) {
    free(NULL);
    void *a = malloc(0), *b = malloc(0);
    CHECK(a && b && a != b);
    free(a);
    free(b);
    for (size_t n = 0; n < 9000; n += (n < 300 ? 1 : 37)) {
        void *p = malloc(n);
        CHECK(p);
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(malloc_usable_size(p) >= n);
        fill(p, n);
        CHECK(intact(p, n));
        free(p);
    }
    CHECK(malloc_usable_size(NULL) == 0);
    errno = 0;
    CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    ok("basics");
}

static void calloc_and_arrays(void) {
    for (size_t n = 1; n < 70000; n = n * 3 + 1) {
        unsigned char *p = calloc(n, 3);
        CHECK(p);
        for (size_t i = 0; i < n * 3; i++)
            CHECK(p[i] == 0);
        memset(p, 0xa5, n * 3);
        free(p);
    }
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc((size_t)1 << 33, (size_t)1 << 33) == NULL && errno == ENOMEM);
    void *p = malloc(100);
    fill(p, 100);
    errno = 0;
    CHECK(reallocarray(p, SIZE_MAX / 4, 8) == NULL && errno == ENOMEM);
    CHECK(intact(p, 100)); /* untouched */
    void *q = reallocarray(p, 50, 4);
    CHECK(q && intactk(q, 100, 100));
    free(q);
    ok("calloc_reallocarray");
}

static void realloc_chains(void) {
    /* realloc(NULL, n) is malloc(n). */
    char *p = realloc(NULL, 10);
    CHECK(p);
    /* glibc: realloc(p, 0) frees p and returns NULL. */
    CHECK(realloc(p, 0) == NULL);
    /* Grow byte by byte, then by doubling, then shrink; content kept. */
    size_t n = 1;
    p = malloc(1);
    p[0] = 0;
    for (; n < 20000; n++) {
        p = realloc(p, n + 1);
        CHECK(p);
        CHECK(p[n - 1] == (char)(n - 1));
        p[n] = (char)n;
    }
    for (; n < (8u << 20); n *= 2) {
        p = realloc(p, n * 2);
        CHECK(p && ((uintptr_t)p & 15) == 0);
        for (size_t i = 0; i < 20000; i += 997)
            CHECK(p[i] == (char)i);
        memset(p + n, 7, n);
    }
    for (; n > 1; n /= 3) {
        p = realloc(p, n);
        CHECK(p);
        for (size_t i = 0; i < n && i < 20000; i += 13)
            CHECK(p[i] == (char)i);
    }
    free(p);
    /* Many chains at once, randomised sizes. */
    uint64_t s = 88172645463325252ull;
    enum { K = 64 };
    char *v[K] = {0};
    size_t len[K] = {0};
    for (int it = 0; it < 20000; it++) {
        int k = (int)(rng_next(&s) % K);
        size_t m = rng_next(&s) % (rng_next(&s) % 8 == 0 ? 200000 : 3000);
        if (v[k])
            CHECK(intact(v[k], len[k]));
        char *q = realloc(v[k], m);
        if (q)
            CHECK(intactk(q, len[k] < m ? len[k] : m, len[k]));
        if (m == 0) {
            if (v[k])
                CHECK(q == NULL); /* freed, as glibc does */
            else
                free(q); /* realloc(NULL, 0) is malloc(0) */
            v[k] = NULL;
            len[k] = 0;
            continue;
        }
        CHECK(q);
        /* The common prefix moved intact; refill for the new size. */
        v[k] = q;
        len[k] = m;
        fill(q, m);
    }
    for (int k = 0; k < K; k++)
        free(v[k]);
    ok("realloc_chains");
}

static void alignments(void) {
    size_t sizes[] = {0, 1, 8, 15, 16, 17, 100, 1000, 2048, 4096, 5000, 70000};
    for (size_t a = 1; a <= 65536; a *= 2) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t n = sizes[i];
            void *p = (void *)1;
            int r = posix_memalign(&p, a, n);
            if (a < sizeof(void *)) {
                CHECK(r == EINVAL && p == (void *)1);
            } else {
                CHECK(r == 0 && p && ((uintptr_t)p % a) == 0 && ((uintptr_t)p & 15) == 0);
                CHECK(malloc_usable_size(p) >= n);
                fill(p, n);
                CHECK(intact(p, n));
                free(p);
            }
            p = aligned_alloc(a, n);
            CHECK(p && ((uintptr_t)p % a) == 0 && ((uintptr_t)p & 15) == 0);
            fill(p, n);
            free(p);
            p = memalign(a, n);
            CHECK(p && ((uintptr_t)p % a) == 0 && ((uintptr_t)p & 15) == 0);
            CHECK(malloc_usable_size(p) >= n);
            fill(p, n);
            free(p);
        }
    }
    /* Invalid alignments. */
    void *p = (void *)1;
    CHECK(posix_memalign(&p, 0, 16) == EINVAL && p == (void *)1);
    CHECK(posix_memalign(&p, 24, 16) == EINVAL && p == (void *)1);
    CHECK(posix_memalign(&p, sizeof(void *) / 2, 16) == EINVAL);
    if (on_bsa) {
        /* glibc before 2.38 accepts any alignment here; bsa does what
         * glibc 2.38+ does. */
        errno = 0;
        CHECK(aligned_alloc(24, 48) == NULL && errno == EINVAL);
        errno = 0;
        CHECK(aligned_alloc(0, 48) == NULL && errno == EINVAL);
    }
    /* memalign rounds a non-power-of-two up, as glibc does. */
    p = memalign(24, 48);
    CHECK(p && ((uintptr_t)p % 32) == 0);
    free(p);
    errno = 0;
    CHECK(memalign(((size_t)1 << 63) + 1, 16) == NULL && errno == EINVAL);
    long page = sysconf(_SC_PAGESIZE);
    p = valloc(10);
    CHECK(p && ((uintptr_t)p % (uintptr_t)page) == 0);
    free(p);
    p = pvalloc(10);
    CHECK(p && ((uintptr_t)p % (uintptr_t)page) == 0 && malloc_usable_size(p) >= (size_t)page);
    fill(p, (size_t)page);
    free(p);
    ok("alignments");
}

/* ---- threads: each allocates and frees randomly, checking content ---- */

static void *churn_worker(void *arg) {
    uint64_t s = (uintptr_t)arg * 2654435761u + 1;
    enum { K = 256 };
    void *v[K] = {0};
    size_t len[K] = {0};
    for (int it = 0; it < 100000; it++) {
        int k = (int)(rng_next(&s) % K);
        if (v[k]) {
            CHECK(intact(v[k], len[k]));
            free(v[k]);
            v[k] = NULL;
        } else {
            size_t n = rng_next(&s) % (rng_next(&s) % 16 == 0 ? 40000 : 512);
            v[k] = malloc(n);
            CHECK(v[k]);
            len[k] = n;
            fill(v[k], n);
        }
    }
    for (int k = 0; k < K; k++)
        free(v[k]);
    return NULL;
}

static void threads(void) {
    pthread_t t[8];
    for (uintptr_t i = 0; i < 8; i++)
        CHECK(pthread_create(&t[i], NULL, churn_worker, (void *)(i + 1)) == 0);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    ok("threads");
}

/* ---- producer/consumer: objects freed by another thread than allocated ---- */

enum { RING = 1024 };
struct ring {
    _Atomic(void *) slot[RING];
    _Atomic size_t head, tail;
};
static struct ring rings[4];
static atomic_int producers_left;

static void *producer(void *arg) {
    struct ring *r = arg;
    uint64_t s = (uintptr_t)arg;
    for (int i = 0; i < 200000; i++) {
        size_t n = 16 + rng_next(&s) % 600;
        void *p = malloc(n);
        CHECK(p);
        *(size_t *)p = n;
        fill((char *)p + sizeof(size_t), n - sizeof(size_t));
        size_t h = atomic_load(&r->head);
        while (h - atomic_load(&r->tail) >= RING)
            sched_yield();
        atomic_store(&r->slot[h % RING], p);
        atomic_store(&r->head, h + 1);
    }
    atomic_fetch_sub(&producers_left, 1);
    return NULL;
}

static void *consumer(void *arg) {
    struct ring *r = arg;
    for (;;) {
        size_t t = atomic_load(&r->tail);
        if (t == atomic_load(&r->head)) {
            if (atomic_load(&producers_left) == 0 && t == atomic_load(&r->head))
                return NULL;
            sched_yield();
            continue;
        }
        void *p = atomic_load(&r->slot[t % RING]);
        atomic_store(&r->tail, t + 1);
        size_t n = *(size_t *)p;
        CHECK(intact((char *)p + sizeof(size_t), n - sizeof(size_t)));
        free(p);
    }
}

static void producer_consumer(void) {
    pthread_t p[4], c[4];
    atomic_store(&producers_left, 4);
    for (int i = 0; i < 4; i++) {
        CHECK(pthread_create(&p[i], NULL, producer, &rings[i]) == 0);
        CHECK(pthread_create(&c[i], NULL, consumer, &rings[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(p[i], NULL);
        pthread_join(c[i], NULL);
    }
    ok("producer_consumer");
}

static void *short_thread(void *arg);

/* ---- fork under load ---- */

static atomic_int stop_load;

static void *load_worker(void *arg) {
    uint64_t s = (uintptr_t)arg * 7919 + 3;
    void *v[64] = {0};
    while (!atomic_load(&stop_load)) {
        int k = (int)(rng_next(&s) % 64);
        free(v[k]);
        v[k] = malloc(rng_next(&s) % (rng_next(&s) % 32 == 0 ? 100000 : 300));
        CHECK(v[k]);
    }
    for (int k = 0; k < 64; k++)
        free(v[k]);
    return NULL;
}

static void fork_under_load(void) {
    pthread_t t[4];
    atomic_store(&stop_load, 0);
    for (uintptr_t i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, load_worker, (void *)(i + 1)) == 0);
    for (int round = 0; round < 40; round++) {
        void *keep = malloc(1000);
        fill(keep, 1000);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            /* The child allocates (small, large, from a new thread) and exits
             * through exit(), so the allocator's exit check runs here too. */
            CHECK(intact(keep, 1000));
            free(keep);
            for (int i = 0; i < 2000; i++) {
                void *p = malloc((size_t)(i * 37) % 5000);
                CHECK(p);
                free(p);
            }
            pthread_t ct;
            CHECK(pthread_create(&ct, NULL, short_thread, (void *)99) == 0);
            pthread_join(ct, NULL);
            exit(0);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        free(keep);
    }
    atomic_store(&stop_load, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ok("fork_under_load");
}

/* ---- thread churn: thousands of short threads; objects outlive them ---- */

enum { HANDOFF = 512 };
static _Atomic(void *) handoff[HANDOFF];

static void *short_thread(void *arg) {
    uint64_t s = (uintptr_t)arg * 31 + 7;
    for (int i = 0; i < 50; i++) {
        size_t n = 8 + rng_next(&s) % 3000;
        void *p = malloc(n);
        CHECK(p);
        memset(p, 0x5a, n);
        /* Leave it for a later thread to free. */
        void *old = atomic_exchange(&handoff[rng_next(&s) % HANDOFF], p);
        free(old);
    }
    return NULL;
}

static void thread_churn(void) {
    for (int wave = 0; wave < 200; wave++) {
        pthread_t t[16];
        for (uintptr_t i = 0; i < 16; i++)
            CHECK(pthread_create(&t[i], NULL, short_thread, (void *)(wave * 16 + i)) == 0);
        for (int i = 0; i < 16; i++)
            pthread_join(t[i], NULL);
    }
    for (int i = 0; i < HANDOFF; i++)
        free(atomic_exchange(&handoff[i], NULL));
    ok("thread_churn");
}

/* ---- misuse: refused, reported, ignored (bsa only) ---- */

static char not_from_malloc[64];

static void misuse(void) {
    free(not_from_malloc + 16);           /* foreign pointer */
    char *p = malloc(40);
    free(p);
    free(p);                              /* double free */
    char *q = malloc(100000);
    free(q + 4096);                       /* interior pointer of a large block */
    free(q);
    CHECK(realloc(not_from_malloc, 10) == NULL);
    CHECK(malloc_usable_size(not_from_malloc) == 0);
    /* Still perfectly usable afterwards. */
    void *r = malloc(10);
    CHECK(r);
    free(r);
    ok("misuse");
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *b = getenv("BSA_TEST_BSA");
    on_bsa = b && strcmp(b, "1") == 0;
    t0 = now();
    basics();
    calloc_and_arrays();
    realloc_chains();
    alignments();
    threads();
    producer_consumer();
    fork_under_load();
    thread_churn();
    if (on_bsa)
        misuse();
    printf("all ok\n");
    return 0;
}
