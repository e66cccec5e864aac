// Command gpu-device-plugin is the node tests' stand-in for NVIDIA's device plugin: it
// registers a resource (nvidia.com/gpu) with the kubelet's device manager, advertises one
// device per GPU UUID given to it, and on Allocate answers what NVIDIA's plugin answers with
// its default envvar strategy: NVIDIA_VISIBLE_DEVICES set to the allocated GPUs' UUIDs. Each
// allocation is logged as one JSON line on standard output.
//
//	gpu-device-plugin --devices GPU-aaa,GPU-bbb [--resource nvidia.com/gpu]
//	                  [--plugin-dir /var/lib/kubelet/device-plugins] [--socket nodetest-gpu.sock]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
	stop    chan struct{}
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	select {
	case <-p.stop:
	case <-s.Context().Done():
	}
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	known := map[string]bool{}
	for _, d := range p.devices {
		known[d.ID] = true
	}
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		for _, id := range c.DevicesIds {
			if !known[id] {
				return nil, fmt.Errorf("unknown device %q", id)
			}
		}
		visible := strings.Join(c.DevicesIds, ",")
		line, _ := json.Marshal(map[string]any{"allocate": c.DevicesIds, "NVIDIA_VISIBLE_DEVICES": visible})
		fmt.Println(string(line))
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": visible},
		})
	}
	return resp, nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func main() {
	devices := flag.String("devices", "", "comma-separated device IDs (GPU UUIDs)")
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name")
	dir := flag.String("plugin-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	socket := flag.String("socket", "nodetest-gpu.sock", "this plugin's socket name in --plugin-dir")
	flag.Parse()
	if *devices == "" {
		log.Fatal("--devices is required")
	}
	p := &plugin{stop: make(chan struct{})}
	for _, id := range strings.Split(*devices, ",") {
		p.devices = append(p.devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
	}

	path := filepath.Join(*dir, *socket)
	_ = os.Remove(path)
	lis, err := net.Listen("unix", path)
	if err != nil {
		log.Fatalf("listen on %s: %v", path, err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Fatalf("serve: %v", err)
		}
	}()

	kubelet := filepath.Join(*dir, filepath.Base(pluginapi.KubeletSocket))
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("dial %s: %v", kubelet, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     *socket,
		ResourceName: *resource,
	})
	cancel()
	conn.Close()
	if err != nil {
		log.Fatalf("register %s with the kubelet at %s: %v", *resource, kubelet, err)
	}
	log.Printf("registered %s with %d devices at %s", *resource, len(p.devices), path)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	close(p.stop)
	srv.Stop()
	_ = os.Remove(path)
}
