/* SPDX-License-Identifier: MIT */
/*
 * Serial transport (see serial.h). Owns the tty file descriptor, its
 * read/write events, the pending output and the frame decoder.
 */
#include "links/serial.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <event2/event.h>

#include "codec/serial.h"
#include "codec/smp.h"
#include "util/util.h"

/* Output waiting for the tty; beyond this, sends fail with -EAGAIN. */
#define SERIAL_OUT_MAX (64u * 1024)

struct serial_link {
	struct link *link;
	char *path;
	unsigned speed;
	int fd;
	struct event *rd, *wr;
	struct smp_serial_decoder *dec;
	uint8_t *out;
	size_t out_len;
};

static const struct {
	unsigned baud;
	unsigned speed;
} speeds[] = {
	{ 9600, B9600 }, { 19200, B19200 }, { 38400, B38400 },
	{ 57600, B57600 }, { 115200, B115200 }, { 230400, B230400 },
	{ 460800, B460800 }, { 921600, B921600 }, { 1000000, B1000000 },
	{ 2000000, B2000000 },
};

int serial_baud_to_speed(unsigned baud, unsigned *ret)
{
	for (size_t i = 0; i < ARRAY_SIZE(speeds); i++) {
		if (speeds[i].baud == baud) {
			*ret = speeds[i].speed;
			return 0;
		}
	}
	return -EINVAL;
}

static void close_tty(struct serial_link *s)
{
	if (s->rd)
		event_free(s->rd);
	if (s->wr)
		event_free(s->wr);
	s->rd = s->wr = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	free(s->out);
	s->out = NULL;
	s->out_len = 0;
}

static void lost(struct serial_link *s, int err)
{
	close_tty(s);
	link_set_state(s->link, LINK_STATE_DOWN, err);
}

static void frame_cb(const uint8_t *frame, size_t len, int err,
		     enum smp_serial_status st, void *user_data)
{
	struct serial_link *s = user_data;
	struct smp_hdr hdr;

	/* Bad packets are skipped: the request they answered times out. */
	if (err == 0 && smp_frame_check(frame, len, &hdr) == (int)len)
		link_deliver_frame(s->link, frame, len);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct serial_link *s = arg;
	uint8_t buf[1024];
	ssize_t n = read(fd, buf, sizeof(buf));

	if (n > 0) {
		smp_serial_decoder_feed(s->dec, buf, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	lost(s, n == 0 ? -ECONNRESET : -errno);
}

static int flush_out(struct serial_link *s)
{
	while (s->out_len) {
		ssize_t n = write(s->fd, s->out, s->out_len);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return -errno;
		}
		memmove(s->out, s->out + n, s->out_len - (size_t)n);
		s->out_len -= (size_t)n;
	}
	if (s->out_len)
		event_add(s->wr, NULL);
	return 0;
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct serial_link *s = arg;
	int r = flush_out(s);

	if (r < 0)
		lost(s, r);
}

static int setup_tty(int fd, unsigned speed)
{
	struct termios t;

	if (tcgetattr(fd, &t) < 0)
		return errno == ENOTTY ? 0 : -errno; /* pipes/sockets in tests */
	cfmakeraw(&t);
	t.c_cflag |= CLOCAL | CREAD;
	t.c_cflag &= ~CRTSCTS;
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (cfsetispeed(&t, speed) < 0 || cfsetospeed(&t, speed) < 0 ||
	    tcsetattr(fd, TCSANOW, &t) < 0)
		return -errno;
	tcflush(fd, TCIOFLUSH);
	return 0;
}

static int serial_connect(struct link *link)
{
	struct serial_link *s = link_priv(link);
	int fd, r;

	if (s->fd >= 0)
		return 0;
	fd = open(s->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = setup_tty(fd, s->speed);
	if (r < 0) {
		close(fd);
		return r;
	}
	s->fd = fd;
	s->rd = event_new(link_base(link), fd, EV_READ | EV_PERSIST, read_cb, s);
	s->wr = event_new(link_base(link), fd, EV_WRITE, write_cb, s);
	event_add(s->rd, NULL);
	smp_serial_decoder_reset(s->dec);
	link_set_state(link, LINK_STATE_UP, 0);
	return 0;
}

static void serial_disconnect(struct link *link)
{
	struct serial_link *s = link_priv(link);

	if (s->fd >= 0)
		lost(s, 0);
}

static int serial_send(struct link *link, const uint8_t *frame, size_t len)
{
	struct serial_link *s = link_priv(link);
	uint8_t *enc;
	size_t enc_len;
	int r;

	if (s->fd < 0)
		return -ENOTCONN;
	if (len > SERIAL_LINK_MAX_FRAME)
		return -EMSGSIZE;
	r = smp_serial_encode(frame, len, &enc, &enc_len);
	if (r < 0)
		return r;
	if (s->out_len + enc_len > SERIAL_OUT_MAX) {
		free(enc);
		return -EAGAIN;
	}
	s->out = xrealloc(s->out, s->out_len + enc_len);
	memcpy(s->out + s->out_len, enc, enc_len);
	s->out_len += enc_len;
	free(enc);
	r = flush_out(s);
	/* Report the loss from the loop, not from inside the caller's send:
	 * the read event sees the same error and brings the link down. */
	if (r < 0)
		event_active(s->rd, EV_READ, 0);
	return r;
}

static size_t serial_mtu(const struct link *link)
{
	return SERIAL_LINK_MAX_FRAME;
}

static void serial_destroy(struct link *link)
{
	struct serial_link *s = link_priv(link);

	close_tty(s);
	smp_serial_decoder_free(s->dec);
	free(s->path);
	free(s);
}

static const struct link_ops serial_ops = {
	.name = "serial",
	.connect = serial_connect,
	.disconnect = serial_disconnect,
	.send = serial_send,
	.mtu = serial_mtu,
	.destroy = serial_destroy,
};

struct link *serial_link_new(struct event_base *base, const char *path,
			     unsigned baud, int *err)
{
	struct serial_link *s;
	unsigned speed;

	if (serial_baud_to_speed(baud, &speed) < 0) {
		if (err)
			*err = -EINVAL;
		return NULL;
	}
	s = xnew(struct serial_link);
	s->path = xstrdup(path);
	s->speed = speed;
	s->fd = -1;
	s->dec = smp_serial_decoder_new(SERIAL_LINK_MAX_FRAME, frame_cb, s);
	s->link = link_new(&serial_ops, base, s);
	return s->link;
}
