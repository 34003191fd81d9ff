package sdk

import (
	"google.golang.org/grpc"

	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// InstanceConn returns the connection a component returned by a Client
// calls through: every call on it is addressed to the component's
// instance. A relay (ferry's proxies) forwards calls it received for the
// component to it. ok is false for a component that is not remote.
func InstanceConn(component any) (conn grpc.ClientConnInterface, ok bool) {
	switch c := component.(type) {
	case *remoteSource:
		return c.in, true
	case *remoteTarget:
		return c.in, true
	case *remoteRepository:
		return c.in, true
	}
	return nil, false
}

// AttachSource returns the source instance id configured beforehand, by
// this Client's process or by the far end of a relay the Client's
// connection goes through. No call is made.
func (c *Client) AttachSource(id string) Source {
	in := c.instance(id)
	return &remoteSource{in: in, rpc: pb.NewSourceClient(in)}
}

// AttachTarget returns a target instance as AttachSource does.
func (c *Client) AttachTarget(id string) Target {
	in := c.instance(id)
	return &remoteTarget{in: in, rpc: pb.NewTargetClient(in)}
}

// AttachRepository returns a repository instance as AttachSource does.
func (c *Client) AttachRepository(id string) Repository {
	in := c.instance(id)
	return &remoteRepository{in: in, rpc: pb.NewRepositoryClient(in)}
}
