/*
 * sockmap.bpf.c - the kernel half of ferry-sockmap (sockmap.c): a stream
 * verdict program that sends every byte a relayed socket receives out of
 * its peer, so that the bytes never reach user space.
 *
 * <socks> holds each relayed socket under the cookie of its peer: a byte
 * received on socket S is redirected to the socket stored under S's own
 * cookie, which is S's peer, to its egress (flags 0). The user space half
 * fills the map once both sockets of a connection exist.
 *
 * Built with clang's BPF target from <linux/bpf.h> alone: it reads no
 * kernel structure, so it needs no BTF of the running kernel.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 65536);
    __type(key, __u64);   /* the cookie of the peer */
    __type(value, __u32); /* the socket (a descriptor when updated) */
} socks SEC(".maps");

SEC("sk_skb/stream_verdict")
int
relay_verdict(struct __sk_buff *skb)
{
    __u64 key = bpf_get_socket_cookie(skb);

    /* SK_PASS with the redirect set, or SK_DROP when the peer is not in
     * the map; user space fills the map before this runs (sockmap.c). */
    return bpf_sk_redirect_hash(skb, &socks, &key, 0);
}

char LICENSE[] SEC("license") = "GPL";
