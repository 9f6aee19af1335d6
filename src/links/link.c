/* SPDX-License-Identifier: MIT */
/* The transport-independent part of a link: callbacks and state. */
#include "links/link.h"

#include <errno.h>
#include <stdlib.h>

#include "util/util.h"

struct link {
	const struct link_ops *ops;
	struct event_base *base;
	void *priv;
	enum link_state state;
	struct link_callbacks cbs;
	void *user_data;
};

struct link *link_new(const struct link_ops *ops, struct event_base *base,
		      void *priv)
{
	struct link *link = xnew(struct link);

	link->ops = ops;
	link->base = base;
	link->priv = priv;
	link->state = LINK_STATE_DOWN;
	return link;
}

void *link_priv(const struct link *link)
{
	return link->priv;
}

struct event_base *link_base(const struct link *link)
{
	return link->base;
}

void link_deliver_frame(struct link *link, const uint8_t *frame, size_t len)
{
	if (link->cbs.frame)
		link->cbs.frame(link, frame, len, link->user_data);
}

void link_report_bad_input(struct link *link, const char *what)
{
	if (link->cbs.bad_input)
		link->cbs.bad_input(link, what, link->user_data);
}

void link_set_state(struct link *link, enum link_state state, int err)
{
	if (link->state == state && !err)
		return;
	link->state = state;
	if (link->cbs.state)
		link->cbs.state(link, state, err, link->user_data);
}

void link_set_callbacks(struct link *link, const struct link_callbacks *cbs,
			void *user_data)
{
	link->cbs = *cbs;
	link->user_data = user_data;
}

int link_connect(struct link *link)
{
	return link->ops->connect(link);
}

void link_disconnect(struct link *link)
{
	link->ops->disconnect(link);
}

int link_send(struct link *link, const uint8_t *frame, size_t len)
{
	if (link->state != LINK_STATE_UP)
		return -ENOTCONN;
	return link->ops->send(link, frame, len);
}

size_t link_mtu(const struct link *link)
{
	return link->ops->mtu(link);
}

enum link_state link_state(const struct link *link)
{
	return link->state;
}

const char *link_transport(const struct link *link)
{
	return link->ops->name;
}

const char *link_state_str(enum link_state state)
{
	switch (state) {
	case LINK_STATE_DOWN:
		return "down";
	case LINK_STATE_CONNECTING:
		return "connecting";
	case LINK_STATE_UP:
		return "up";
	}
	return "unknown";
}

struct link *link_free(struct link *link)
{
	if (!link)
		return NULL;
	if (link->ops->destroy)
		link->ops->destroy(link);
	free(link);
	return NULL;
}
