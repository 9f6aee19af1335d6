/* SPDX-License-Identifier: MIT */
/*
 * A device's SMP serial face on a pseudo-terminal, like Zephyr's SMP over
 * the console UART: the codec's incremental decoder takes the byte stream
 * (noise and bad packets are skipped, as the device does), each frame goes
 * to the device, each reply goes back base64-framed in 127-byte lines.
 * The slave side stays open here so a client closing it does not hang the
 * master up; clients open sim_serial_path().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "codec/serial.h"
#include "device.h"
#include "transport.h"
#include "util/util.h"

#define SERIAL_MAX_FRAME 65535
#define SERIAL_MAX_OUT (1u << 20) /* nobody reads: stop queueing replies */

struct sim_serial {
	struct sim_device *dev;
	int master, slave;
	char *path;
	struct bufferevent *bev;
	struct smp_serial_decoder *dec;
};

static void reply_cb(struct sim_device *dev, const uint8_t *frame, size_t len, void *ud)
{
	struct sim_serial *s = ud;
	uint8_t *out;
	size_t olen;

	if (evbuffer_get_length(bufferevent_get_output(s->bev)) > SERIAL_MAX_OUT)
		return;
	if (smp_serial_encode(frame, len, &out, &olen) == 0) {
		bufferevent_write(s->bev, out, olen);
		free(out);
	}
}

static void frame_cb(const uint8_t *frame, size_t len, int err, enum smp_serial_status st,
		     void *ud)
{
	struct sim_serial *s = ud;

	if (err == 0)
		(void)sim_device_rx_frame(s->dev, frame, len, reply_cb, s);
}

static void read_cb(struct bufferevent *bev, void *ud)
{
	struct sim_serial *s = ud;
	uint8_t buf[4096];
	size_t n;

	while ((n = bufferevent_read(bev, buf, sizeof(buf))) > 0)
		smp_serial_decoder_feed(s->dec, buf, n);
}

static void event_cb(struct bufferevent *bev, short what, void *ud)
{
	/* EIO while no client holds the slave: keep reading */
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int open_pty(struct sim_serial *s)
{
	struct termios t;
	const char *name;

	s->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (s->master < 0 || grantpt(s->master) < 0 || unlockpt(s->master) < 0 ||
	    !(name = ptsname(s->master)))
		return -errno;
	s->path = xstrdup(name);
	s->slave = open(s->path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (s->slave < 0 || tcgetattr(s->slave, &t) < 0)
		return -errno;
	cfmakeraw(&t);
	if (tcsetattr(s->slave, TCSANOW, &t) < 0)
		return -errno;
	return 0;
}

struct sim_serial *sim_serial_new(struct event_base *base, struct sim_device *dev, int *ret_err)
{
	struct sim_serial *s = xnew(struct sim_serial);
	int r;

	s->dev = dev;
	s->slave = -1;
	r = open_pty(s);
	if (r < 0) {
		*ret_err = r;
		return sim_serial_free(s);
	}
	evutil_make_socket_nonblocking(s->master);
	s->dec = smp_serial_decoder_new(SERIAL_MAX_FRAME, frame_cb, s);
	s->bev = bufferevent_socket_new(base, s->master, 0);
	bufferevent_setcb(s->bev, read_cb, NULL, event_cb, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	return s;
}

struct sim_serial *sim_serial_free(struct sim_serial *s)
{
	if (!s)
		return NULL;
	if (s->dev)
		sim_device_cancel_replies(s->dev, s);
	if (s->bev)
		bufferevent_free(s->bev);
	smp_serial_decoder_free(s->dec);
	if (s->master >= 0)
		close(s->master);
	if (s->slave >= 0)
		close(s->slave);
	free(s->path);
	free(s);
	return NULL;
}

const char *sim_serial_path(const struct sim_serial *s)
{
	return s->path;
}
