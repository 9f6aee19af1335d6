/* SPDX-License-Identifier: MIT */
/*
 * A text/event-stream parser (the WHATWG server-sent events framing): fed
 * the bytes as they arrive, in pieces of any size, it hands each complete
 * event (type, id, data lines joined by newlines) to a callback. Lines end
 * with LF, CRLF or CR; comments and unknown fields are skipped.
 */
#pragma once

#include <stddef.h>

#define SSE_MAX_LINE (1u << 20)  /* a longer line is -EMSGSIZE */
#define SSE_MAX_DATA (4u << 20)  /* so is a larger event */

struct sse;

/* type is "message" when the event named none; id NULL when it had none.
 * Returns nonzero to stop the stream. */
typedef int (*sse_event_fn)(const char *type, const char *id, const char *data, void *ud);

struct sse *sse_new(sse_event_fn cb, void *user_data);
struct sse *sse_free(struct sse *s);

/* 0; 1 when the callback asked to stop (the rest of buf is ignored);
 * -EMSGSIZE when a line or an event exceeds the limits above. */
int sse_feed(struct sse *s, const char *buf, size_t len);
